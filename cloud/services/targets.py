"""Notification targets: who gets which alarms, and test messages.

A customer keeps any number of targets; each narrows by terminal (None:
all), channel or contact input (None: all), alarm kind (None: all) and
minimum severity. Who actually receives an
event is decided by :func:`cloud.notify.targets.resolve`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import (
    Channel,
    Customer,
    Delivery,
    DeliveryChannel,
    NotificationTarget,
    Severity,
    Terminal,
    as_utc,
)
from cloud.models.notifications import check_address, new_secret
from cloud.models.tenancy import LANGUAGES
from cloud.notify import chat, ledger
from cloud.notify.netguard import AddressPolicy
from cloud.services import audit
from cloud.services.destinations import check_chat, check_destination
from cloud.services.errors import N_, Invalid, NotFound, Throttled
from cloud.services.scope import (
    MANAGE_TARGETS,
    Viewer,
    get_scoped,
    require,
    scoped,
)

# Test messages: at most this many per target and per customer within the
# window (sliding). Alarms are not limited; they also go out before tests.
TEST_LIMITS = (
    ("target", 3, timedelta(minutes=10)),
    ("customer", 10, timedelta(hours=1)),
)

# Alarm kinds a target can narrow to (terminal rules and cloud-side conditions).
CONDITIONS = ("hi", "lo", "leak", "contact", "offline", "unreachable", "stale", "clock", "demand")


@dataclass(frozen=True)
class TargetInput:
    channel: str
    address: str
    terminal_id: str | None
    cond: str | None
    min_severity: str
    language: str | None
    notify_recovery: bool
    enabled: bool
    channel_name: str | None = None  # one channel or contact input; None: all


def listing(
    session: Session, viewer: Viewer, customer_id: int | None = None
) -> list[NotificationTarget]:
    stmt = scoped(viewer, NotificationTarget)
    if customer_id is not None:
        stmt = stmt.where(NotificationTarget.customer_id == customer_id)
    return list(
        session.scalars(stmt.order_by(NotificationTarget.customer_id, NotificationTarget.id))
    )


def _check(
    session: Session,
    viewer: Viewer,
    customer_id: int,
    inp: TargetInput,
    addresses: AddressPolicy,
) -> tuple[DeliveryChannel, str]:
    try:
        channel = DeliveryChannel(inp.channel)
    except ValueError as err:
        raise Invalid(N_("Unknown delivery channel %(value)s."), value=inp.channel) from err
    try:
        address = check_address(channel, inp.address)
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    if channel == DeliveryChannel.WEBHOOK:
        check_destination(addresses, address)
    elif channel == DeliveryChannel.CHAT:
        check_chat(addresses, address)
    if inp.terminal_id:
        # A terminal of another customer in the form is "not found", like in a URL.
        terminal = get_scoped(session, viewer, Terminal, inp.terminal_id)
        if terminal.customer_id != customer_id:
            raise NotFound(f"terminal {inp.terminal_id}")
    if inp.channel_name and inp.channel_name not in channel_names(
        session, customer_id, inp.terminal_id or None
    ):
        raise Invalid(N_("Unknown channel %(value)s."), value=inp.channel_name)
    if inp.cond and inp.cond not in CONDITIONS:
        raise Invalid(N_("Unknown alarm kind %(value)s."), value=inp.cond)
    if inp.min_severity not in set(Severity):
        raise Invalid(N_("Unknown severity %(value)s."), value=inp.min_severity)
    if inp.language and inp.language not in LANGUAGES:
        raise Invalid(N_("Unknown language %(value)s."), value=inp.language)
    return channel, address


def channel_names(session: Session, customer_id: int, terminal_id: str | None) -> set[str]:
    """Names of the current channels of ``terminal_id`` (None: of any of the
    customer's terminals): what a target or a maintenance window may name."""
    stmt = (
        sa.select(Channel.name)
        .join(Terminal, Terminal.id == Channel.terminal_id)
        .where(Terminal.customer_id == customer_id, Channel.retired_at.is_(None))
    )
    if terminal_id is not None:
        stmt = stmt.where(Channel.terminal_id == terminal_id)
    return set(session.scalars(stmt.distinct()))


def create(
    session: Session,
    viewer: Viewer,
    customer_id: int,
    inp: TargetInput,
    *,
    addresses: AddressPolicy,
    now: datetime,
    ip: str | None,
) -> NotificationTarget:
    """Add a target for ``customer_id`` (which the viewer must be able to see).
    A webhook must point at a public address or one ``addresses`` allows."""
    require(viewer, MANAGE_TARGETS)
    get_scoped(session, viewer, Customer, customer_id)
    channel, address = _check(session, viewer, customer_id, inp, addresses)
    target = NotificationTarget(customer_id=customer_id, channel=channel)
    _assign(target, inp, address)
    session.add(target)
    session.flush()
    audit.record(
        session,
        viewer,
        "target.create",
        "target",
        target.id,
        at=now,
        ip=ip,
        customer_id=customer_id,
        details=_details(target),
    )
    session.commit()
    return target


def update(
    session: Session,
    viewer: Viewer,
    target_id: object,
    inp: TargetInput,
    *,
    addresses: AddressPolicy,
    now: datetime,
    ip: str | None,
) -> NotificationTarget:
    require(viewer, MANAGE_TARGETS)
    target = get_scoped(session, viewer, NotificationTarget, target_id)
    channel, address = _check(session, viewer, target.customer_id, inp, addresses)
    target.channel = channel
    _assign(target, inp, address)
    audit.record(
        session,
        viewer,
        "target.update",
        "target",
        target.id,
        at=now,
        ip=ip,
        customer_id=target.customer_id,
        details=_details(target),
    )
    session.commit()
    return target


def delete(
    session: Session, viewer: Viewer, target_id: object, *, now: datetime, ip: str | None
) -> None:
    require(viewer, MANAGE_TARGETS)
    target = get_scoped(session, viewer, NotificationTarget, target_id)
    audit.record(
        session,
        viewer,
        "target.delete",
        "target",
        target.id,
        at=now,
        ip=ip,
        customer_id=target.customer_id,
        details=_details(target),
    )
    session.delete(target)
    session.commit()


def rotate_secret(
    session: Session, viewer: Viewer, target_id: object, *, now: datetime, ip: str | None
) -> tuple[NotificationTarget, str]:
    """Give the target a new signing secret; returns it (show it once).
    Webhooks signed with the old one stop verifying at once."""
    require(viewer, MANAGE_TARGETS)
    target = get_scoped(session, viewer, NotificationTarget, target_id)
    target.hmac_secret = new_secret()
    audit.record(
        session,
        viewer,
        "target.secret.rotate",
        "target",
        target.id,
        at=now,
        ip=ip,
        customer_id=target.customer_id,
    )
    session.commit()
    return target, target.hmac_secret


def send_test(
    session: Session, viewer: Viewer, target_id: object, *, now: datetime, ip: str | None
) -> bool:
    """Queue a (never billed) test message to the target through the outbox.

    Raises :class:`Throttled` past :data:`TEST_LIMITS` (a test button must
    not become a way to mail-bomb an address or to fill the outbox).
    """
    require(viewer, MANAGE_TARGETS)
    target = get_scoped(session, viewer, NotificationTarget, target_id)
    # One customer's presses are counted one at a time (a row lock on
    # PostgreSQL; SQLite runs one writer anyway).
    session.scalar(
        sa.select(Customer.id).where(Customer.id == target.customer_id).with_for_update()
    )
    _check_test_rate(session, target, now)
    queued = ledger.queue_test(session, target, now)
    audit.record(
        session,
        viewer,
        "target.test",
        "target",
        target.id,
        at=now,
        ip=ip,
        customer_id=target.customer_id,
        details={"address": target.address},
    )
    session.commit()
    return queued


def _check_test_rate(session: Session, target: NotificationTarget, now: datetime) -> None:
    for scope, limit, window in TEST_LIMITS:
        mine = (
            Delivery.target_id == target.id
            if scope == "target"
            else Delivery.customer_id == target.customer_id
        )
        recent = session.scalars(
            sa.select(Delivery.created_at)
            .where(mine, Delivery.event == "test", Delivery.created_at > now - window)
            .order_by(Delivery.created_at)
            .limit(limit)
        ).all()
        if len(recent) >= limit:
            wait = (as_utc(recent[0]) + window - now).total_seconds()
            raise Throttled(
                N_("Too many test messages. Try again in %(seconds)s seconds."),
                max(1, math.ceil(wait)),
            )


def shown_addresses(rows: Iterable[NotificationTarget]) -> dict[int, str]:
    """Chat addresses as pages show them: tokens masked (:func:`cloud.notify.chat.display`)."""
    return {t.id: chat.display(t.address) for t in rows if t.channel == DeliveryChannel.CHAT}


def recent_deliveries(
    session: Session, target: NotificationTarget, limit: int = 10
) -> list[Delivery]:
    return list(
        session.scalars(
            sa.select(Delivery)
            .where(Delivery.target_id == target.id)
            .order_by(Delivery.created_at.desc(), Delivery.id.desc())
            .limit(limit)
        )
    )


def _assign(target: NotificationTarget, inp: TargetInput, address: str) -> None:
    target.address = address
    target.terminal_id = inp.terminal_id or None
    target.cond = inp.cond or None
    target.channel_name = inp.channel_name or None
    target.min_severity = Severity(inp.min_severity)
    target.language = inp.language or None
    target.notify_recovery = inp.notify_recovery
    target.enabled = inp.enabled


def _details(target: NotificationTarget) -> dict[str, object]:
    return {
        "channel": str(target.channel),
        "address": target.address,
        "terminal_id": target.terminal_id,
        "cond": target.cond,
        "channel_name": target.channel_name,
        "min_severity": str(target.min_severity),
        "enabled": target.enabled,
    }
