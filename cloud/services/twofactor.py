"""Two-factor authentication: TOTP codes (RFC 6238) and one-time recovery codes.

Policy: operators and installers must use it (:func:`must_enrol` is true for
them until they have; the site lets them reach nothing else), customers may.
A code is good once: the newest accepted time step is kept, and a code for
that step or an older one is refused, so a code read over a shoulder or out
of a proxy log cannot be replayed within its window (RFC 6238 section 5.2).
One step either side of now is accepted for clock drift.

Wrong codes are login failures: they are audited as ``auth.login.failed``
(``details.factor``) and go through :mod:`cloud.services.throttle` like
wrong passwords, so guessing the six digits is slowed the same way. A
success is ``auth.login`` (which ends the throttle's count), enrolment
``auth.2fa.enable``, turning it off ``auth.2fa.disable``, new recovery codes
``auth.2fa.recovery_codes``, a recovery code spent ``auth.2fa.recovery_used``.

Recovery codes are shown once and kept as SHA-256 hashes (80 random bits
each: nothing to guess from the hash). The TOTP secret itself must be kept
in clear to compute codes; it is in the database (and so in backups, see
docs/security.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import pyotp
from sqlalchemy.orm import Session

from cloud.models import RecoveryCode, Role, User
from cloud.services import audit, throttle
from cloud.services.errors import N_, Invalid
from cloud.services.scope import Viewer

REQUIRED_ROLES = frozenset({Role.OPERATOR, Role.INSTALLER})
ISSUER = "mimamori"
RECOVERY_CODES = 10
DRIFT_STEPS = 1
_DIGITS = re.compile(r"^\d{6}$")
_RECOVERY = re.compile(r"^[A-Z2-7]{16}$")


class CodeRefused(Invalid):
    """A wrong, used or malformed code (never says which)."""


def required(user: User) -> bool:
    """True when ``user``'s role must log in with a second factor."""
    return user.role in REQUIRED_ROLES


def must_enrol(user: User) -> bool:
    """True while a user who must use two factors has not set them up."""
    return required(user) and not user.two_factor


def pending_secret(session: Session, user: User) -> str:
    """The secret being enrolled (made on first call, kept until confirmed so
    reloading the page does not change the QR code). :class:`Invalid` if the
    user has two factors already. Commits when it makes one."""
    if user.two_factor:
        raise Invalid(N_("Two-step login is on already."))
    if user.totp_secret is None:
        user.totp_secret = pyotp.random_base32()
        session.commit()
    return user.totp_secret


def provisioning_uri(user: User, secret: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def confirm(session: Session, user: User, code: str, *, now: datetime, ip: str | None) -> list[str]:
    """Turn two factors on once ``code`` proves the app holds the pending
    secret; return the new recovery codes (shown once). :class:`CodeRefused`
    for a wrong code. Commits."""
    if user.two_factor or user.totp_secret is None:
        raise Invalid(N_("Two-step login is on already."))
    if not _take_totp(user, code, now):
        raise CodeRefused(N_("The code is wrong or was used already."))
    user.totp_enabled_at = now
    codes = _new_recovery_codes(user, now)
    audit.record(session, Viewer.of(user), "auth.2fa.enable", "user", user.id, at=now, ip=ip)
    session.commit()
    return codes


def check_login(
    session: Session,
    policy: throttle.ThrottlePolicy,
    user: User,
    code: str,
    *,
    ip: str | None,
    now: datetime,
    known_device: bool = False,
) -> None:
    """The second step of a login: accept a current TOTP code or an unused
    recovery code of ``user``. Raises :class:`cloud.services.errors.Throttled`
    before looking at the code when the account or address must wait, and
    :class:`CodeRefused` (audited as a failed login, committed) otherwise.
    Does not record the login itself (:func:`cloud.services.accounts.finish_login`);
    also confirms actions of a logged-in user (new recovery codes, turning
    two factors off, minting an API token), throttled the same way."""
    key = throttle.login_key(user.email)
    throttle.check(session, key, ip, now, policy, known_device=known_device)
    factor = _accept(session, user, code, now, ip)
    if factor is None:
        audit.record(
            session,
            None,
            throttle.LOGIN_FAILED,
            throttle.OBJECT_TYPE,
            key,
            at=now,
            ip=ip,
            actor=user.email,
            customer_id=user.customer_id,
            details={"known": True, "factor": "totp"},
        )
        session.commit()
        raise CodeRefused(N_("The code is wrong or was used already."))
    session.commit()


def new_recovery_codes(session: Session, user: User, *, now: datetime, ip: str | None) -> list[str]:
    """Replace ``user``'s recovery codes (the old ones die); return the new
    ones. The caller has checked a current code. Commits."""
    codes = _new_recovery_codes(user, now)
    audit.record(
        session, Viewer.of(user), "auth.2fa.recovery_codes", "user", user.id, at=now, ip=ip
    )
    session.commit()
    return codes


def disable(session: Session, viewer: Viewer, user: User, *, now: datetime, ip: str | None) -> None:
    """Turn two factors off for ``user`` (secret, replay mark and recovery
    codes dropped). For a user whose role requires them, only an operator may,
    and then the user enrols again at the next login (a lost phone).
    :class:`Invalid` otherwise. The caller has checked the password and a code
    (or, for an operator's reset, who asks). Commits."""
    if required(user) and not (viewer.role == Role.OPERATOR and viewer.user_id != user.id):
        raise Invalid(N_("Two-step login is required for your role."))
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    user.recovery_codes.clear()
    audit.record(
        session,
        viewer,
        "auth.2fa.disable",
        "user",
        user.id,
        at=now,
        ip=ip,
        customer_id=user.customer_id,
    )
    session.commit()


def unused_recovery_codes(user: User) -> int:
    return sum(1 for r in user.recovery_codes if r.used_at is None)


# -- codes -----------------------------------------------------------------------


def normalize(code: str) -> str:
    """A code as typed (spaces, dashes, lower case) in its canonical form."""
    return re.sub(r"[\s-]", "", code).upper()[:64]


def _accept(session: Session, user: User, code: str, now: datetime, ip: str | None) -> str | None:
    """Which factor ``code`` passed ("totp", "recovery") and used up, or None."""
    if not user.two_factor:
        return None
    value = normalize(code)
    if _DIGITS.match(value):
        return "totp" if _take_totp(user, value, now) else None
    if _RECOVERY.match(value):
        digest = _digest(value)
        for row in user.recovery_codes:
            if row.used_at is None and hmac.compare_digest(row.code_hash, digest):
                row.used_at = now
                audit.record(
                    session,
                    Viewer.of(user),
                    "auth.2fa.recovery_used",
                    "user",
                    user.id,
                    at=now,
                    ip=ip,
                    details={"left": unused_recovery_codes(user)},
                )
                return "recovery"
    return None


def _take_totp(user: User, code: str, now: datetime) -> bool:
    """True if ``code`` is the TOTP of a step near ``now`` newer than the last
    accepted one; that step becomes the last accepted one."""
    if user.totp_secret is None or not _DIGITS.match(normalize(code)):
        return False
    totp = pyotp.TOTP(user.totp_secret)
    current = totp.timecode(now)
    last = user.totp_last_step if user.totp_last_step is not None else -1
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step > last and hmac.compare_digest(totp.generate_otp(step), normalize(code)):
            user.totp_last_step = step
            return True
    return False


def _new_recovery_codes(user: User, now: datetime) -> list[str]:
    user.recovery_codes.clear()
    codes = [
        base64.b32encode(secrets.token_bytes(10)).decode("ascii") for _ in range(RECOVERY_CODES)
    ]
    user.recovery_codes.extend(RecoveryCode(code_hash=_digest(c), created_at=now) for c in codes)
    return [format_recovery(c) for c in codes]


def format_recovery(code: str) -> str:
    """``ABCDEFGHIJKLMNOP`` as ``ABCD-EFGH-IJKL-MNOP`` (easier to copy by hand)."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode("ascii")).hexdigest()
