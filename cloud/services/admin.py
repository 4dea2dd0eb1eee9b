"""The operator area: customers, users, terminals with their contracts,
provisioning of terminal credentials, announcements and the audit log.

Operators may do everything here; installers may list, register and
provision terminals (they commission them on site). Every change is audited.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.broker.passwd import new_secret
from cloud.brokersync.status import set_terminal_status
from cloud.errors import InvalidTransition, InvalidValue
from cloud.models import AuditEntry, Customer, Role, Terminal, TerminalStatus, User
from cloud.models.enums import CUSTOMER_ROLES
from cloud.models.maintenance import windows_for
from cloud.models.ops import Announcement
from cloud.services import audit, customer_status
from cloud.services.credentials import set_mqtt_password
from cloud.services.errors import N_, Forbidden, Invalid, NotFound
from cloud.services.passwords import Passwords
from cloud.services.scope import OPERATE, PROVISION, Viewer, require

PAGE_SIZE = 100


# -- customers -----------------------------------------------------------------


@dataclass(frozen=True)
class CustomerInput:
    name: str
    contracted_demand_kw: float | None = None
    timezone: str = "Asia/Tokyo"
    language: str = "ja"
    active: bool = True


def customers(session: Session) -> list[Customer]:
    return list(session.scalars(sa.select(Customer).order_by(Customer.name, Customer.id)))


def save_customer(
    session: Session,
    viewer: Viewer,
    customer_id: int | None,
    inp: CustomerInput,
    *,
    now: datetime,
    ip: str | None,
) -> Customer:
    """Create (``customer_id`` None) or update a customer. Deactivating or
    reactivating one does what :mod:`cloud.services.customer_status` says."""
    require(viewer, OPERATE)
    if not inp.name.strip():
        raise Invalid(N_("A name is required."))
    customer = Customer() if customer_id is None else _get(session, Customer, customer_id)
    was_active = customer_id is None or customer.active
    try:
        customer.name = inp.name.strip()[:200]
        customer.contracted_demand_kw = inp.contracted_demand_kw
        customer.timezone = inp.timezone
        customer.language = inp.language
        customer.active = inp.active
    except InvalidValue as err:
        session.rollback()
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    session.add(customer)
    session.flush()
    effects: dict[str, int] = {}
    if was_active and not customer.active:
        effects = customer_status.deactivated(session, viewer, customer, now=now, ip=ip)
    elif customer.active and not was_active:
        effects = customer_status.reactivated(session, viewer, customer, now=now, ip=ip)
    audit.record(
        session,
        viewer,
        "customer.create" if customer_id is None else "customer.update",
        "customer",
        customer.id,
        at=now,
        ip=ip,
        customer_id=customer.id,
        details={"name": customer.name, "active": customer.active, **effects},
    )
    session.commit()
    return customer


# -- users ---------------------------------------------------------------------


@dataclass(frozen=True)
class UserInput:
    email: str
    name: str
    role: str
    customer_id: int | None
    language: str = "ja"
    active: bool = True


def users(session: Session, customer_id: int | None = None) -> list[User]:
    stmt = sa.select(User).order_by(User.customer_id, User.email)
    if customer_id is not None:
        stmt = stmt.where(User.customer_id == customer_id)
    return list(session.scalars(stmt))


def save_user(
    session: Session,
    viewer: Viewer,
    passwords: Passwords,
    user_id: int | None,
    inp: UserInput,
    *,
    now: datetime,
    ip: str | None,
) -> User:
    """Create or update a user. A new user gets an unusable random password
    (the caller sends a reset link so they choose their own)."""
    require(viewer, OPERATE)
    try:
        role = Role(inp.role)
    except ValueError as err:
        raise Invalid(N_("Unknown role %(role)s."), role=inp.role) from err
    customer_id = inp.customer_id
    if role in CUSTOMER_ROLES:
        if customer_id is None:
            raise Invalid(N_("A customer user needs a customer."))
        _get(session, Customer, customer_id)
    else:
        customer_id = None  # staff belong to no customer
    if user_id is None:
        user = User(password_hash=passwords.hash(secrets.token_urlsafe(32)))
    else:
        user = _get(session, User, user_id)
        if user.id == viewer.user_id and (role != Role.OPERATOR or not inp.active):
            raise Invalid(N_("You cannot demote or deactivate yourself."))
    try:
        user.email = inp.email
        user.language = inp.language
    except InvalidValue as err:
        session.rollback()
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    clash = session.scalars(sa.select(User.id).where(User.email == user.email)).first()
    if clash is not None and clash != user.id:
        session.rollback()
        raise Invalid(N_("%(email)s has an account already."), email=user.email)
    user.name = inp.name.strip()[:200]
    user.role = role
    user.customer_id = customer_id
    user.active = inp.active
    session.add(user)
    session.flush()
    audit.record(
        session,
        viewer,
        "user.create" if user_id is None else "user.update",
        "user",
        user.id,
        at=now,
        ip=ip,
        customer_id=customer_id,
        details={"email": user.email, "role": str(role), "active": user.active},
    )
    session.commit()
    return user


def create_operator(
    session: Session,
    passwords: Passwords,
    email: str,
    *,
    name: str = "",
    language: str = "ja",
    password: str | None = None,
    now: datetime,
    actor: str = "mimamori-admin",
) -> User:
    """An operator made from the shell, where nobody is logged in yet (the
    first one of a site): the audit log names ``actor``. Without
    ``password`` the account gets an unusable random one and the caller
    mails an invitation. Raises :class:`Invalid` for a taken or malformed
    address or a password that breaks the policy. Commits."""
    try:
        user = User(email=email, language=language, role=Role.OPERATOR, name=name.strip()[:200])
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    if session.scalars(sa.select(User.id).where(User.email == user.email)).first():
        raise Invalid(N_("%(email)s has an account already."), email=user.email)
    user.password_hash = passwords.hash(password or secrets.token_urlsafe(32))
    session.add(user)
    session.flush()
    audit.record(
        session,
        None,
        "user.create",
        "user",
        user.id,
        at=now,
        ip=None,
        actor=actor,
        details={"email": user.email, "role": str(Role.OPERATOR), "invited": password is None},
    )
    session.commit()
    return user


# -- terminals -----------------------------------------------------------------


@dataclass(frozen=True)
class TerminalInput:
    name: str
    customer_id: int | None
    site_address: str = ""
    registered_on: date | None = None
    contract_start: date | None = None
    contract_end: date | None = None
    cancellation_notice_on: date | None = None


def terminals(session: Session, customer_id: int | None = None) -> list[Terminal]:
    stmt = sa.select(Terminal).order_by(Terminal.id)
    if customer_id is not None:
        stmt = stmt.where(Terminal.customer_id == customer_id)
    return list(session.scalars(stmt))


def save_terminal(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    inp: TerminalInput,
    *,
    create: bool,
    now: datetime,
    ip: str | None,
) -> Terminal:
    """Register a terminal (``create``) or change its customer and contract.
    Installers may register; only operators change contracts."""
    require(viewer, PROVISION if create else OPERATE)
    if inp.customer_id is not None:
        _get(session, Customer, inp.customer_id)
    if inp.contract_start and inp.contract_end and inp.contract_end < inp.contract_start:
        raise Invalid(N_("The contract ends before it starts."))
    if create:
        if session.get(Terminal, terminal_id) is not None:
            raise Invalid(N_("Terminal %(id)s exists already."), id=terminal_id)
        try:
            terminal = Terminal(id=terminal_id)
        except InvalidValue as err:
            raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
        session.add(terminal)
    else:
        terminal = _get(session, Terminal, terminal_id)
    terminal.name = inp.name.strip()[:200]
    terminal.customer_id = inp.customer_id
    terminal.site_address = inp.site_address.strip()
    terminal.registered_on = inp.registered_on
    terminal.contract_start = inp.contract_start
    terminal.contract_end = inp.contract_end
    terminal.cancellation_notice_on = inp.cancellation_notice_on
    session.flush()
    audit.record(
        session,
        viewer,
        "terminal.create" if create else "terminal.update",
        "terminal",
        terminal.id,
        at=now,
        ip=ip,
        customer_id=terminal.customer_id,
        details={k: (v.isoformat() if isinstance(v, date) else v) for k, v in inp.__dict__.items()},
    )
    session.commit()
    return terminal


def set_status(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    status: str,
    *,
    reason: str = "",
    now: datetime,
    ip: str | None,
) -> Terminal:
    """Suspend, resume (``active``) or decommission a terminal (operators).
    The broker account follows within seconds (:mod:`cloud.brokersync`)."""
    require(viewer, OPERATE)
    _get(session, Terminal, terminal_id)
    try:
        terminal = set_terminal_status(
            session,
            terminal_id,
            status,
            actor=viewer.email,
            actor_user_id=viewer.user_id,
            at=now,
            reason=reason,
            ip=ip,
        )
    except InvalidValue as err:
        raise Invalid(N_("Unknown status %(status)s."), status=status) from err
    except InvalidTransition as err:
        raise Invalid(N_("A decommissioned terminal cannot be put back in service.")) from err
    session.commit()
    return terminal


@dataclass(frozen=True)
class BrokerEndpoint:
    host: str
    port: int
    tls: bool
    # The broker reconciler's public sealing key (cloud.broker.sealing): the
    # password is kept sealed for it, so it can create the broker account.
    seal_key: str = ""


def provision(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    broker: BrokerEndpoint,
    *,
    rotate: bool,
    now: datetime,
    ip: str | None,
) -> dict[str, Any]:
    """Create the terminal's MQTT password and return the installer's site
    file (as a dict) holding it. The password exists in plaintext only in
    that return value: the database keeps its Mosquitto ``$7$`` hash and a
    copy sealed for the broker reconciler, which creates or updates the
    broker account within seconds (a rotation disconnects sessions opened
    with the old password).

    Refuses (:class:`Invalid`) when credentials exist, unless ``rotate``;
    for a decommissioned terminal; and when no sealing key is configured
    (the broker could never learn the password). Installers rotate only
    while commissioning, before the terminal was ever heard from; the
    credentials of a terminal in service are the operator's to replace
    (:class:`Forbidden`): a new password would let its holder impersonate
    the terminal and cut the real one off (docs/security.md, roles).
    """
    require(viewer, PROVISION)
    terminal = _get(session, Terminal, terminal_id)
    if terminal.credential_hash is not None and not rotate:
        raise Invalid(N_("Credentials exist already; rotate them to make new ones."))
    if rotate and terminal.last_seen_at is not None and not viewer.may(OPERATE):
        raise Forbidden("only operators replace the credentials of a terminal in service")
    if terminal.status == TerminalStatus.DECOMMISSIONED:
        raise Invalid(N_("A decommissioned terminal cannot be put back in service."))
    if not broker.seal_key:
        raise Invalid(N_("The broker sealing key is not configured; ask the operator."))
    password = new_secret()
    try:
        set_mqtt_password(terminal, password, broker.seal_key)
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    audit.record(
        session,
        viewer,
        "terminal.credentials.rotate" if rotate else "terminal.credentials.create",
        "terminal",
        terminal.id,
        at=now,
        ip=ip,
        customer_id=terminal.customer_id,
    )
    session.commit()
    return {
        "terminal_id": terminal.id,
        "broker": {"host": broker.host, "port": broker.port, "tls": broker.tls},
        "credentials": {"username": terminal.id, "password": password},
        "wiring": [],
    }


# -- announcements -------------------------------------------------------------


def announcements(session: Session) -> list[Announcement]:
    return list(session.scalars(sa.select(Announcement).order_by(Announcement.starts_at.desc())))


def current_announcements(
    session: Session, customer_id: int | None, now: datetime
) -> list[Announcement]:
    """Announcements not yet over that concern ``customer_id`` (None: staff, all)."""
    rows = session.scalars(
        sa.select(Announcement).where(Announcement.ends_at > now).order_by(Announcement.starts_at)
    )
    return [
        a
        for a in rows
        if customer_id is None or a.customer_ids is None or customer_id in a.customer_ids
    ]


def create_announcement(
    session: Session,
    viewer: Viewer,
    *,
    title: str,
    body: str,
    starts_at: datetime,
    ends_at: datetime,
    customer_ids: list[int] | None,
    components: list[str],
    now: datetime,
    ip: str | None,
    mute_alarms: bool = False,
) -> Announcement:
    """Plan a service maintenance announcement; with ``mute_alarms`` the
    customers' alarms are muted during it (:func:`cloud.models.maintenance.windows_for`)."""
    require(viewer, OPERATE)
    if not title.strip():
        raise Invalid(N_("A title is required."))
    if ends_at <= starts_at:
        raise Invalid(N_("The announcement ends before it starts."))
    for cid in customer_ids or []:
        _get(session, Customer, cid)
    item = Announcement(
        title=title.strip()[:200],
        body=body.strip(),
        starts_at=starts_at,
        ends_at=ends_at,
        customer_ids=customer_ids or None,
        components=components,
        mutes_alarms=mute_alarms,
    )
    session.add(item)
    session.flush()
    if mute_alarms:
        session.add_all(windows_for(item))
    audit.record(
        session,
        viewer,
        "announcement.create",
        "announcement",
        item.id,
        at=now,
        ip=ip,
        customer_id=None,
        details={
            "mutes_alarms": mute_alarms,
            "title": item.title,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        },
    )
    session.commit()
    return item


def delete_announcement(
    session: Session, viewer: Viewer, announcement_id: int, *, now: datetime, ip: str | None
) -> None:
    require(viewer, OPERATE)
    item = _get(session, Announcement, announcement_id)
    audit.record(
        session,
        viewer,
        "announcement.delete",
        "announcement",
        item.id,
        at=now,
        ip=ip,
        customer_id=None,
        details={"title": item.title},
    )
    session.delete(item)
    session.commit()


# -- audit log -----------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    action: str = ""  # prefix, e.g. "auth." or "terminal.config"
    actor: str = ""  # substring
    customer_id: int | None = None
    page: int = 1


def audit_log(session: Session, viewer: Viewer, f: AuditFilter) -> tuple[list[AuditEntry], int]:
    require(viewer, OPERATE)
    stmt = sa.select(AuditEntry)
    if f.action:
        stmt = stmt.where(AuditEntry.action.startswith(f.action, autoescape=True))
    if f.actor:
        stmt = stmt.where(AuditEntry.actor.contains(f.actor.lower(), autoescape=True))
    if f.customer_id is not None:
        stmt = stmt.where(AuditEntry.customer_id == f.customer_id)
    total = int(session.scalar(stmt.with_only_columns(sa.func.count(AuditEntry.id))) or 0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, f.page), pages)
    rows = list(
        session.scalars(
            stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        )
    )
    return rows, pages


def _get(session: Session, model: type[Any], ident: object) -> Any:
    obj = session.get(model, ident)
    if obj is None:
        raise NotFound(f"{model.__name__} {ident!r}")
    return obj
