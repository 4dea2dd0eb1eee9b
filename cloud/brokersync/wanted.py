"""The broker accounts the terminal table asks for, as plain data.

A terminal has an account when it has credentials and is not
decommissioned. The account is enabled while the terminal is active and
its contract has not ended: a contract ends at the end of its last day in
the customer's time zone, the earlier of ``contract_end`` and the end a
cancellation notice gives (received by the 15th: that month's end; from
the 16th: next month's end; :func:`cloud.ops.billing.contract_end_for_notice`,
the same rule billing uses). A
contract that has not started yet keeps the account enabled: installers
commission terminals before the service begins, and what those terminals
send is kept by the ingest, not refused at the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.broker.dynsec import fingerprint
from cloud.models import Customer, Terminal, TerminalStatus
from cloud.ops.billing import contract_end_for_notice


@dataclass(frozen=True)
class Wanted:
    """One terminal account as it should be. ``sealed``: the password sealed
    for the reconciler (None: the terminal was provisioned without a key)."""

    tid: str
    fingerprint: str
    enabled: bool
    sealed: str | None

    def same_as(self, other: Wanted) -> bool:
        return (self.fingerprint, self.enabled) == (other.fingerprint, other.enabled)


def contract_over(
    contract_end: date | None, notice_on: date | None, zone: str | None, now: datetime
) -> bool:
    """True once the last contracted day has passed in the customer's zone."""
    ends = [contract_end, contract_end_for_notice(notice_on) if notice_on else None]
    known = [e for e in ends if e is not None]
    if not known:
        return False
    return now.astimezone(ZoneInfo(zone or "UTC")).date() > min(known)


def wanted_accounts(session: Session, now: datetime) -> dict[str, Wanted]:
    """Every terminal account the broker should hold, by terminal id."""
    rows = session.execute(
        sa.select(
            Terminal.id,
            Terminal.credential_hash,
            Terminal.credential_sealed,
            Terminal.status,
            Terminal.contract_end,
            Terminal.cancellation_notice_on,
            Customer.timezone,
        )
        .outerjoin(Customer, Customer.id == Terminal.customer_id)
        .where(
            Terminal.credential_hash.is_not(None),
            Terminal.status != TerminalStatus.DECOMMISSIONED,
        )
    )
    wanted: dict[str, Wanted] = {}
    for tid, password_hash, sealed, status, end, notice, zone in rows:
        assert password_hash is not None  # the query's condition
        enabled = status == TerminalStatus.ACTIVE and not contract_over(end, notice, zone, now)
        wanted[tid] = Wanted(tid, fingerprint(password_hash), enabled, sealed)
    return wanted
