"""A customer's own users, managed by its customer administrators.

A customer administrator invites people of their company (a new login with
an unusable password; the site mails the invitation link, ``/welcome/<token>``,
to choose one), changes their role between customer administrator and
viewer, and removes them: the login is deactivated (its sessions and API
token stop working at once) but kept, so the audit log still names who did
what; inviting the address again brings it back. Every change is audited.

Only users of the administrator's own customer are ever found: another
customer's user, a staff member or an id that does not exist all answer
:class:`NotFound`. Nobody changes or removes themself here, so a customer
cannot lose its last administrator by accident.
"""

from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import Role, User
from cloud.models.enums import CUSTOMER_ROLES
from cloud.models.tenancy import check_language, normalize_email
from cloud.services import audit
from cloud.services.errors import N_, Invalid, NotFound
from cloud.services.passwords import Passwords
from cloud.services.scope import TEAM, Viewer, get_scoped, require

__all__ = ["CUSTOMER_ROLES", "TEAM", "invite", "members", "pending", "remove", "set_role"]


def members(session: Session, viewer: Viewer) -> list[User]:
    """The active users of the viewer's customer, administrators first."""
    require(viewer, TEAM)
    return list(
        session.scalars(
            sa.select(User)
            .where(User.customer_id == viewer.customer_id, User.active.is_(True))
            .order_by(User.role, User.email)
        )
    )


def _role(value: str) -> Role:
    try:
        role = Role(value)
    except ValueError as err:
        raise Invalid(N_("Unknown role %(role)s."), role=value) from err
    if role not in CUSTOMER_ROLES:
        raise Invalid(N_("Unknown role %(role)s."), role=value)
    return role


def _member(session: Session, viewer: Viewer, user_id: int) -> User:
    """A user of the viewer's customer other than the viewer (else NotFound / Invalid)."""
    user = get_scoped(session, viewer, User, user_id)
    if user.customer_id != viewer.customer_id or not user.active:
        raise NotFound(f"user {user_id}")
    if user.id == viewer.user_id:
        raise Invalid(N_("You cannot change or remove yourself."))
    return user


def invite(
    session: Session,
    viewer: Viewer,
    passwords: Passwords,
    *,
    email: str,
    name: str,
    role: str,
    language: str,
    now: datetime,
    ip: str | None,
) -> User:
    """A new login of the viewer's customer (or a removed one back), with an
    unusable password until the invitation link is used. Raises
    :class:`Invalid` for a bad address, role or language, or an address that
    has a login already (whose customer it is, is not said)."""
    require(viewer, TEAM)
    the_role = _role(role)
    try:
        address = normalize_email(email)
        check_language(language)
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    user = session.scalars(sa.select(User).where(User.email == address)).first()
    again = user is not None and user.customer_id == viewer.customer_id and not user.active
    if user is not None and not again:
        raise Invalid(N_("%(email)s has an account already."), email=address)
    if user is None:
        user = User(email=address, customer_id=viewer.customer_id)
        session.add(user)
    # A fresh unusable password: an old one (of a removed login) must not come back.
    user.password_hash = passwords.hash(secrets.token_urlsafe(32))
    user.name = name.strip()[:200]
    user.role = the_role
    user.language = language
    user.active = True
    user.last_login_at = None
    session.flush()
    audit.record(
        session,
        viewer,
        "user.invite",
        "user",
        user.id,
        at=now,
        ip=ip,
        details={"email": address, "role": str(the_role), "again": again},
    )
    session.commit()
    return user


def set_role(
    session: Session, viewer: Viewer, user_id: int, role: str, *, now: datetime, ip: str | None
) -> User:
    """Make a member customer administrator or viewer."""
    require(viewer, TEAM)
    user = _member(session, viewer, user_id)
    before, user.role = user.role, _role(role)
    audit.record(
        session,
        viewer,
        "user.role",
        "user",
        user.id,
        at=now,
        ip=ip,
        details={"email": user.email, "before": str(before), "after": str(user.role)},
    )
    session.commit()
    return user


def remove(
    session: Session, viewer: Viewer, user_id: int, *, now: datetime, ip: str | None
) -> User:
    """Deactivate a member: no more logins, sessions or API token."""
    require(viewer, TEAM)
    user = _member(session, viewer, user_id)
    user.active = False
    user.drop_api_token()
    audit.record(
        session,
        viewer,
        "user.remove",
        "user",
        user.id,
        at=now,
        ip=ip,
        details={"email": user.email, "role": str(user.role)},
    )
    session.commit()
    return user


def pending(session: Session, viewer: Viewer, user_id: int) -> User:
    """A member who has not logged in yet (for sending the invitation again)."""
    require(viewer, TEAM)
    user = _member(session, viewer, user_id)
    if user.last_login_at is not None:
        raise Invalid(N_("%(email)s has logged in already."), email=user.email)
    return user
