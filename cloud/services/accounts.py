"""Logging in, changing and resetting passwords, and session identities.

Every outcome is audited: ``auth.login``, ``auth.login.failed``,
``auth.login.password`` (the first of two factors), ``auth.logout``,
``auth.password.change``, ``auth.password.reset.request``,
``auth.password.reset``. Failed logins go through
:mod:`cloud.services.throttle` first.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import AuditEntry, User, WebSession, as_utc
from cloud.models.tenancy import normalize_email
from cloud.services import audit, throttle
from cloud.services.errors import N_, Invalid, TokenInvalid
from cloud.services.passwords import Passwords
from cloud.services.scope import Viewer

_RESET_SALT = "mimamori.password-reset"
# Invitations are signed apart: a week-long invitation link must never pass
# as a reset link, which expires within the hour.
_INVITATION_SALT = "mimamori.invitation"
RESET_REQUEST = "auth.password.reset.request"
RESET_PER_ACCOUNT_HOUR = 3
RESET_PER_ADDRESS_HOUR = 10
# The password was right; the second factor is still to come.
LOGIN_HALF_WAY = "auth.login.password"


class LoginFailed(Invalid):
    """Wrong address or password, or an inactive account (never says which)."""


def fingerprint(password_hash: str) -> str:
    """A short digest of the current password hash. Session ids and reset
    tokens carry it, so a password change ends other sessions and makes
    issued reset tokens useless."""
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


# A session's last use is written at most this often.
_SEEN_RESOLUTION = timedelta(minutes=1)


def start_session(session: Session, user: User, now: datetime) -> str:
    """Open a server-side session for ``user``; return what the session cookie
    stores (user id, password fingerprint, random token). Commits."""
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(token_hash=_digest(token), user_id=user.id, created_at=now, last_seen_at=now)
    )
    session.commit()
    return f"{user.id}:{fingerprint(user.password_hash)}:{token}"


def user_for_session(
    session: Session, value: str, now: datetime, *, absolute_s: int, idle_s: int
) -> User | None:
    """The active user a session id names, or None if it is stale, forged,
    ended (logout), older than ``absolute_s`` or unused for ``idle_s``."""
    uid, fp, token = _parts(value)
    if not uid.isdigit() or not token:
        return None
    row = session.get(WebSession, _digest(token))
    if row is None or row.user_id != int(uid) or row.ended_at is not None:
        return None
    if now >= as_utc(row.created_at) + timedelta(seconds=absolute_s):
        return None
    if now >= as_utc(row.last_seen_at) + timedelta(seconds=idle_s):
        return None
    user = session.get(User, int(uid))
    if user is None or not user.may_log_in or fingerprint(user.password_hash) != fp:
        return None
    if now - as_utc(row.last_seen_at) >= _SEEN_RESOLUTION:
        row.last_seen_at = now
        session.commit()
    return user


def end_session(session: Session, value: str, now: datetime) -> None:
    """End the server-side session a cookie value names (logout). Commits."""
    token = _parts(value)[2]
    row = session.get(WebSession, _digest(token)) if token else None
    if row is not None and row.ended_at is None:
        row.ended_at = now
        session.commit()


def _parts(value: str) -> tuple[str, str, str]:
    """(user id, password fingerprint, token) of a session cookie value."""
    uid, _, rest = value.partition(":")
    fp, _, token = rest.partition(":")
    return uid, fp, token


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def find_user(session: Session, email: str) -> User | None:
    try:
        address = normalize_email(email)
    except InvalidValue:
        return None
    return session.scalars(sa.select(User).where(User.email == address)).first()


def authenticate(
    session: Session,
    passwords: Passwords,
    policy: throttle.ThrottlePolicy,
    email: str,
    password: str,
    *,
    ip: str | None,
    now: datetime,
    known_device: bool = False,
) -> User:
    """Return the user if ``email``/``password`` match an active account.

    Raises :class:`cloud.services.errors.Throttled` before checking anything when
    the attempt must wait, and :class:`LoginFailed` (after auditing and
    committing the failure) otherwise. ``known_device``: the browser logged in
    to this account before (the per-account limit does not apply). For a user
    with two factors (``user.two_factor``) the login is not complete: the
    caller asks for the code (:func:`cloud.services.twofactor.check_login`)
    and then calls :func:`finish_login`. Commits.
    """
    key = throttle.login_key(email)
    throttle.check(session, key, ip, now, policy, known_device=known_device)
    user = find_user(session, email)
    if user is None:
        passwords.burn(password)
        ok = False
    else:
        ok = passwords.verify(user.password_hash, password) and user.may_log_in
    if not ok:
        audit.record(
            session,
            None,
            throttle.LOGIN_FAILED,
            throttle.OBJECT_TYPE,
            key,
            at=now,
            ip=ip,
            actor=email.strip().lower()[:254] or "?",
            customer_id=user.customer_id if user else None,
            details={"known": user is not None},
        )
        if user is not None:
            # Informational (shown to operators); never a lock, see throttle.
            user.failed_logins = (user.failed_logins or 0) + 1
            user.last_failed_login_at = now
        session.commit()
        raise LoginFailed(N_("Wrong e-mail address or password."))
    assert user is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    if user.two_factor:
        # Not logged in yet, and the throttle's count goes on until the code.
        audit.record(session, Viewer.of(user), LOGIN_HALF_WAY, "user", user.id, at=now, ip=ip)
        session.commit()
        return user
    finish_login(session, user, ip=ip, now=now)
    return user


def finish_login(session: Session, user: User, *, ip: str | None, now: datetime) -> None:
    """Record a complete login of ``user`` (after the password, and the second
    factor when the user has one): ``auth.login``, which also ends the
    throttle's count of failures. Commits."""
    user.record_login(now)
    audit.record(
        session,
        Viewer.of(user),
        throttle.LOGIN_OK,
        throttle.OBJECT_TYPE,
        throttle.login_key(user.email),
        at=now,
        ip=ip,
        details={"user_id": user.id},
    )
    session.commit()


def record_logout(session: Session, user: User, *, ip: str | None, now: datetime) -> None:
    audit.record(session, Viewer.of(user), "auth.logout", "user", user.id, at=now, ip=ip)
    session.commit()


def change_password(
    session: Session,
    passwords: Passwords,
    user: User,
    current: str,
    new: str,
    *,
    ip: str | None,
    now: datetime,
) -> None:
    """Set a new password after checking the current one. Raises
    :class:`Invalid` for a wrong current password or a new one that breaks
    the policy. Commits; other sessions of the user end."""
    if not passwords.verify(user.password_hash, current):
        raise Invalid(N_("The current password is wrong."))
    if new == current:
        raise Invalid(N_("The new password must differ from the current one."))
    user.password_hash = passwords.hash(new)
    # Whoever learnt the old password may have minted a token with it.
    revoked = user.drop_api_token()
    audit.record(
        session,
        Viewer.of(user),
        "auth.password.change",
        "user",
        user.id,
        at=now,
        ip=ip,
        details={"api_token_revoked": revoked},
    )
    session.commit()


def _serializer(secret_key: str, now: datetime, invitation: bool) -> URLSafeTimedSerializer:
    """A token serializer whose clock is ``now`` (the app's clock, not the OS's)."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(now.timestamp())

    salt = _INVITATION_SALT if invitation else _RESET_SALT
    return URLSafeTimedSerializer(secret_key, salt=salt, signer=Signer)


def make_reset_token(
    secret_key: str, user: User, now: datetime, *, invitation: bool = False
) -> str:
    """A signed token for a reset link, or with ``invitation`` for the link a
    new user chooses a first password with (expiry checked in
    :func:`user_for_token`, which must be told the same kind)."""
    serializer = _serializer(secret_key, now, invitation)
    return str(serializer.dumps({"u": user.id, "f": fingerprint(user.password_hash)}))


def user_for_token(
    session: Session,
    secret_key: str,
    token: str,
    max_age_s: int,
    now: datetime,
    *,
    invitation: bool = False,
) -> User:
    """The user a valid reset (or ``invitation``) token names;
    :class:`TokenInvalid` if it is forged or of the other kind, older than
    ``max_age_s`` at ``now``, used already (the password changed since) or
    the account is inactive."""
    serializer = _serializer(secret_key, now, invitation)
    try:
        data = serializer.loads(token, max_age=max_age_s)
    except SignatureExpired as err:
        raise TokenInvalid(N_("The link has expired.")) from err
    except BadSignature as err:
        raise TokenInvalid(N_("The link is not valid.")) from err
    user = session.get(User, int(data.get("u", 0))) if isinstance(data, dict) else None
    if user is None or not user.may_log_in or fingerprint(user.password_hash) != data.get("f"):
        raise TokenInvalid(N_("The link is not valid or was used already."))
    return user


def reset_password(
    session: Session,
    passwords: Passwords,
    secret_key: str,
    token: str,
    new: str,
    *,
    max_age_s: int,
    ip: str | None,
    now: datetime,
    invitation: bool = False,
) -> User:
    """Set a new password through a reset (or ``invitation``) token, which it
    uses up. Commits."""
    user = user_for_token(session, secret_key, token, max_age_s, now, invitation=invitation)
    user.password_hash = passwords.hash(new)
    # A successful reset proves control of the mailbox: clear the failure count.
    user.failed_logins = 0
    # A reset usually means the old password is lost or known to someone:
    # a token minted with it dies too.
    revoked = user.drop_api_token()
    audit.record(
        session,
        Viewer.of(user),
        "auth.password.reset",
        "user",
        user.id,
        at=now,
        ip=ip,
        details={"api_token_revoked": revoked},
    )
    session.commit()
    return user


def record_reset_request(
    session: Session, email: str, user: User | None, *, ip: str | None, now: datetime
) -> None:
    audit.record(
        session,
        Viewer.of(user) if user else None,
        RESET_REQUEST,
        throttle.OBJECT_TYPE,
        throttle.login_key(email),
        at=now,
        ip=ip,
        actor=email.strip().lower()[:254] or "?",
        customer_id=user.customer_id if user else None,
        details={"known": user is not None},
    )
    session.commit()


def reset_allowed(session: Session, email: str, ip: str | None, now: datetime) -> bool:
    """False when this account or client address asked for too many reset
    mails in the last hour (the page answers the same either way; only the
    mail is not sent, so the form cannot be used to flood a mailbox)."""
    since = now - timedelta(hours=1)
    base = sa.select(sa.func.count(AuditEntry.id)).where(
        AuditEntry.action == RESET_REQUEST, AuditEntry.at > since
    )
    per_account = (
        session.scalar(
            base.where(
                AuditEntry.object_type == throttle.OBJECT_TYPE,
                AuditEntry.object_id == throttle.login_key(email),
            )
        )
        or 0
    )
    per_address = (session.scalar(base.where(AuditEntry.ip == ip)) or 0) if ip else 0
    return per_account < RESET_PER_ACCOUNT_HOUR and per_address < RESET_PER_ADDRESS_HOUR
