"""Bearer tokens of the REST API.

A user holds at most one API token. It is shown once when made; the
database keeps only its SHA-256 (``User.api_token_hash``, unique, so the
token finds its user in one indexed lookup). A fast hash is right here,
unlike for passwords: the token is 256 random bits, so there is nothing to
guess from the hash. Making a new token replaces the old one (and the site
asks for the password again first); revoking clears it. A token expires
(``api_token_max_age_days``, 90 by default) and dies with a password change
or reset, or when its user is deactivated. Its last use is recorded (to the
minute) and shown on the token page.

API calls authenticate with ``Authorization: Bearer <token>`` and nothing
else: the site's session cookie is ignored, which is why the API needs no
CSRF protection (a browser never adds the header by itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import request
from sqlalchemy.orm import Session

from cloud.api.errors import Unauthorized
from cloud.models import User, as_utc
from cloud.services import audit
from cloud.services.errors import NotFound
from cloud.services.scope import OPERATE, Viewer

PREFIX = "mm_"  # makes leaked tokens easy to spot with secret scanners


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# Last-use times are written at most this often per token (not on every call).
LAST_USED_RESOLUTION = timedelta(minutes=1)
DEFAULT_LIFETIME = timedelta(days=90)


def issue(
    session: Session,
    viewer: Viewer,
    user_id: int,
    *,
    now: datetime,
    ip: str | None,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> str:
    """Make a new token for ``user_id`` (oneself, or anyone for an operator),
    valid for ``lifetime``, replacing any old one; commits and returns the
    token (shown once). Asking for the password is the caller's part."""
    user = _target(session, viewer, user_id)
    token = PREFIX + secrets.token_urlsafe(32)
    user.api_token_hash = token_hash(token)
    user.api_token_created_at = now
    user.api_token_expires_at = now + lifetime
    user.api_token_last_used_at = None
    audit.record(
        session,
        viewer,
        "user.api_token.create",
        "user",
        user.id,
        at=now,
        ip=ip,
        customer_id=user.customer_id,
    )
    session.commit()
    return token


def revoke(
    session: Session, viewer: Viewer, user_id: int, *, now: datetime, ip: str | None
) -> bool:
    """Forget ``user_id``'s token; True if there was one. Commits."""
    user = _target(session, viewer, user_id)
    had = user.drop_api_token()
    audit.record(
        session,
        viewer,
        "user.api_token.revoke",
        "user",
        user.id,
        at=now,
        ip=ip,
        customer_id=user.customer_id,
    )
    session.commit()
    return had


def _target(session: Session, viewer: Viewer, user_id: int) -> User:
    if user_id != viewer.user_id and not viewer.may(OPERATE):
        raise NotFound(f"user {user_id}")
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id}")
    return user


def user_for_token(session: Session, token: str, now: datetime) -> User | None:
    """The active user holding ``token``, else None. Raises
    :class:`Unauthorized` for a token that expired. Notes the use (commits
    at most once a minute per token)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = token_hash(token)
    user = session.scalars(sa.select(User).where(User.api_token_hash == digest)).first()
    if user is None or not user.may_log_in or user.api_token_hash is None:
        return None
    # The lookup compared in SQL; compare again in constant time for good measure.
    if not hmac.compare_digest(user.api_token_hash, digest):
        return None
    expires = user.api_token_expires_at
    if expires is not None and as_utc(expires) <= now:
        raise Unauthorized("the bearer token has expired: make a new one on the token page")
    last = user.api_token_last_used_at
    if last is None or now - as_utc(last) >= LAST_USED_RESOLUTION:
        user.api_token_last_used_at = now
        session.commit()
    return user


def bearer(session: Session, now: datetime) -> Viewer:
    """The viewer of this API request, from its bearer token; :class:`Unauthorized`
    without a valid one (cookies are never looked at)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    user = user_for_token(session, token.strip(), now)
    if user is None:
        raise Unauthorized("the bearer token is invalid or revoked")
    return Viewer.of(user)
