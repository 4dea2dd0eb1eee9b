"""Login throttling that slows guessing without locking real users out.

Two independent rules, both computed from the audit log (so every web
process sees the same history and nothing extra must be stored or cleaned):

1. **Account and address.** Failed logins for one account *from one client
   address* since that pair's last success: the first ``free_failures`` cost
   nothing; after that each attempt must wait ``base_delay_s * 2**(n - free)``
   seconds (capped at ``max_delay_s``) after the previous failure. An
   attacker's failures slow the attacker only: the account's owner, coming
   from another address, is not delayed at all.
2. **Address.** An address with ``ip_max_failures`` failures (over any
   accounts) within the last ``ip_window_s`` seconds is refused until enough
   of them have slid out of the window. This caps password spraying.
3. **Account.** Failed logins for one account from *any* address since its
   last success: the first ``account_free_failures`` cost nothing, then each
   attempt waits ``account_base_delay_s * 2**(n - free)`` seconds after the
   previous failure, capped at ``account_max_delay_s``. An attacker rotating
   addresses gets one guess per cap at best; the cap is short, so the owner
   is never held up for long, and a browser the owner logged in with before
   (a signed device cookie, see :mod:`cloud.web.blueprints.auth`) skips this
   rule altogether.

No rule is permanent: waiting always helps, and a success resets rules 1 and 3.
A refused attempt never checks the password and is not counted as a failure,
so hammering during the wait does not lengthen it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import AuditEntry
from cloud.services.errors import N_, Throttled

LOGIN_OK = "auth.login"
LOGIN_FAILED = "auth.login.failed"
OBJECT_TYPE = "login"
# Failures older than this no longer count towards rule 1.
MEMORY = timedelta(days=1)
_SCAN = 64  # newest rows looked at for rule 1; enough to reach the cap


def _backoff(failures: int, free: int, base: int, cap: int) -> int:
    if failures < free or failures == 0:
        return 0
    # Exponent capped so huge counts do not build huge integers.
    exponent = min(failures - free, 30)
    return int(min(cap, base * 2**exponent))


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 3
    base_delay_s: int = 2
    max_delay_s: int = 900
    ip_window_s: int = 900
    ip_max_failures: int = 30
    account_free_failures: int = 10
    account_base_delay_s: int = 1
    account_max_delay_s: int = 60

    def delay_after(self, failures: int) -> int:
        """Seconds to wait after the last of ``failures`` consecutive failures
        of one account from one address."""
        return _backoff(failures, self.free_failures, self.base_delay_s, self.max_delay_s)

    def account_delay_after(self, failures: int) -> int:
        """The same for an account's failures from any address."""
        return _backoff(
            failures,
            self.account_free_failures,
            self.account_base_delay_s,
            self.account_max_delay_s,
        )


def login_key(email: str) -> str:
    """The audit object id of a login name: a digest, because addresses may be
    longer than the column and must not be needed to find the rows."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]


def check(
    session: Session,
    key: str,
    ip: str | None,
    now: datetime,
    policy: ThrottlePolicy,
    *,
    known_device: bool = False,
) -> None:
    """Raise :class:`Throttled` (with the seconds to wait) if a login attempt
    for ``key`` from ``ip`` must not be checked now. ``known_device``: the
    browser proved it logged in to this account before (rule 3 skipped)."""
    wait = max(_address_wait(session, ip, now, policy), _pair_wait(session, key, ip, now, policy))
    if not known_device:
        wait = max(wait, _account_wait(session, key, now, policy))
    if wait > 0:
        raise Throttled(N_("Too many failed logins. Try again in %(seconds)s seconds."), wait)


def _ip_match(ip: str | None) -> sa.ColumnElement[bool]:
    return AuditEntry.ip.is_(None) if ip is None else AuditEntry.ip == ip


def _failures_since_success(
    session: Session, key: str, now: datetime, ip_condition: sa.ColumnElement[bool] | None
) -> tuple[int, datetime | None]:
    """(failures since the last success, time of the newest failure) for ``key``."""
    stmt = sa.select(AuditEntry.action, AuditEntry.at).where(
        AuditEntry.object_type == OBJECT_TYPE,
        AuditEntry.object_id == key,
        AuditEntry.action.in_((LOGIN_OK, LOGIN_FAILED)),
        AuditEntry.at > now - MEMORY,
    )
    if ip_condition is not None:
        stmt = stmt.where(ip_condition)
    rows = session.execute(
        stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(_SCAN)
    ).all()
    failures = 0
    last_failure: datetime | None = None
    for action, at in rows:
        if action == LOGIN_OK:
            break
        failures += 1
        last_failure = last_failure or at
    return failures, last_failure


def _pair_wait(
    session: Session, key: str, ip: str | None, now: datetime, policy: ThrottlePolicy
) -> int:
    failures, last_failure = _failures_since_success(session, key, now, _ip_match(ip))
    delay = policy.delay_after(failures)
    if not delay or last_failure is None:
        return 0
    return _seconds_until(last_failure + timedelta(seconds=delay), now)


def _account_wait(session: Session, key: str, now: datetime, policy: ThrottlePolicy) -> int:
    failures, last_failure = _failures_since_success(session, key, now, None)
    delay = policy.account_delay_after(failures)
    if not delay or last_failure is None:
        return 0
    return _seconds_until(last_failure + timedelta(seconds=delay), now)


def _address_wait(session: Session, ip: str | None, now: datetime, policy: ThrottlePolicy) -> int:
    if ip is None:
        return 0
    window = timedelta(seconds=policy.ip_window_s)
    times = session.scalars(
        sa.select(AuditEntry.at)
        .where(
            AuditEntry.action == LOGIN_FAILED,
            AuditEntry.ip == ip,
            AuditEntry.at > now - window,
        )
        .order_by(AuditEntry.at.desc())
        .limit(policy.ip_max_failures)
    ).all()
    if len(times) < policy.ip_max_failures:
        return 0
    # Allowed again once the oldest of the newest `max` failures leaves the window.
    return _seconds_until(times[-1] + window, now)


def _seconds_until(until: datetime, now: datetime) -> int:
    return max(0, math.ceil((until - now).total_seconds()))
