"""What deactivating and reactivating a customer does (operators, docs/security.md).

A customer is deactivated (``Customer.active`` false) when the contract is
over or the account is frozen. From that commit on:

- its users' **web sessions** end (rows closed, so a copied cookie is worthless)
  and its users cannot log in (:func:`cloud.services.accounts.authenticate`,
  :func:`cloud.services.accounts.user_for_session` check the customer);
- its **API tokens** are refused (:func:`cloud.api.auth.user_for_token`);
- its **notifications and forwarding** stop: recipients of new alarms are
  none (:func:`cloud.notify.targets.resolve`), its endpoints take no new data
  (:func:`cloud.forwarding.endpoints_for`), and what is still waiting in the
  outbox is given up (``dead``, "customer deactivated"; visible to
  operators, sent by nobody);
- its **terminals** in service are suspended: the broker reconciler disables
  their accounts and disconnects them; anything they still manage to send
  is parked by the ingest (inactive customer), never lost.

Reactivation restores what comes back by itself (logins, API tokens that
have not expired, forwarding and notifications of new data and alarms) and
resumes exactly the terminals the deactivation suspended (an operator's own
suspension of a terminal stays). Ended sessions stay ended (users log in
again), and the outbox rows given up stay given up: alarms from before are
old news and are not sent late.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.brokersync.status import set_terminal_status
from cloud.models import (
    AuditEntry,
    Customer,
    Delivery,
    DeliveryStatus,
    Terminal,
    TerminalStatus,
    User,
    WebSession,
)
from cloud.services.scope import Viewer

# The reason written on the terminals a deactivation suspends; reactivation
# resumes only terminals whose last status change carries it.
REASON = "customer deactivated"


def deactivated(
    session: Session, viewer: Viewer, customer: Customer, *, now: datetime, ip: str | None
) -> dict[str, int]:
    """Apply a deactivation of ``customer`` (already set inactive) in the
    caller's transaction; return what it stopped (for the audit entry)."""
    users = sa.select(User.id).where(User.customer_id == customer.id)
    sessions = _count(
        session.execute(
            sa.update(WebSession)
            .where(WebSession.user_id.in_(users), WebSession.ended_at.is_(None))
            .values(ended_at=now)
        )
    )
    outbox = _count(
        session.execute(
            sa.update(Delivery)
            .where(
                Delivery.customer_id == customer.id,
                Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.FAILED)),
            )
            .values(status=DeliveryStatus.DEAD, last_error=REASON)
        )
    )
    suspended = 0
    for tid in _terminal_ids(session, customer, TerminalStatus.ACTIVE):
        set_terminal_status(
            session,
            tid,
            TerminalStatus.SUSPENDED,
            actor=viewer.email,
            actor_user_id=viewer.user_id,
            at=now,
            reason=REASON,
            ip=ip,
        )
        suspended += 1
    return {"sessions_ended": sessions, "deliveries_given_up": outbox, "suspended": suspended}


def reactivated(
    session: Session, viewer: Viewer, customer: Customer, *, now: datetime, ip: str | None
) -> dict[str, int]:
    """Undo what :func:`deactivated` suspended: resume the terminals whose
    last status change was that suspension. Caller's transaction."""
    resumed = 0
    for tid in _terminal_ids(session, customer, TerminalStatus.SUSPENDED):
        last = session.scalars(
            sa.select(AuditEntry)
            .where(
                AuditEntry.object_type == "terminal",
                AuditEntry.object_id == tid,
                AuditEntry.action.like("terminal.status.%"),
            )
            .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            .limit(1)
        ).first()
        if last is None or (last.details or {}).get("reason") != REASON:
            continue
        set_terminal_status(
            session,
            tid,
            TerminalStatus.ACTIVE,
            actor=viewer.email,
            actor_user_id=viewer.user_id,
            at=now,
            reason="customer reactivated",
            ip=ip,
        )
        resumed += 1
    return {"resumed": resumed}


def _terminal_ids(session: Session, customer: Customer, status: TerminalStatus) -> list[str]:
    return list(
        session.scalars(
            sa.select(Terminal.id)
            .where(Terminal.customer_id == customer.id, Terminal.status == status)
            .order_by(Terminal.id)
        )
    )


def _count(result: object) -> int:
    """Rows an UPDATE changed (``CursorResult.rowcount``; typed as ``Result``)."""
    return int(getattr(result, "rowcount", 0) or 0)
