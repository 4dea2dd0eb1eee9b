"""Maintenance announcements and failure notices to customers.

Both are queued in the notification ledger (``cloud.notify.ledger.insert``)
as e-mail rows that are **not billable**, so the ordinary outbox delivers
them with retries and the dedup key makes every repeat a no-op:

=================================================  =============================
``maintenance:<announcement>:<customer>:<addr>``   once per announcement
``failure:<component>:<outage start>:<customer>:<addr>``  once per outage
``recovery:<component>:<outage start>:<customer>:<addr>`` once, if a failure
                                                   notice went out for it
=================================================  =============================

``<addr>`` is a short hash of the address (addresses can be 254 characters).
Recipients of a customer: its active users and its enabled e-mail
notification targets, one message per distinct address. Every component is
shared by all customers, so a component failure affects every active
customer; a maintenance announcement affects the customers it lists (all
active customers when it lists none).

Payload ``kind`` is ``maintenance``, ``failure`` or ``recovery``; times are
ISO 8601 UTC and ``timezone`` says how to show them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import (
    Customer,
    Delivery,
    DeliveryChannel,
    NotificationTarget,
    User,
)
from cloud.models.maintenance import windows_for
from cloud.models.ops import Announcement, HealthCheck
from cloud.notify.ledger import insert
from cloud.ops.availability import outage_start


def recipients(session: Session, customer: Customer) -> list[tuple[str, str]]:
    """(address, language) of everyone who gets the customer's service notices."""
    found: dict[str, str] = {}
    users = session.scalars(
        sa.select(User)
        .where(User.customer_id == customer.id, User.active.is_(True))
        .order_by(User.id)
    ).all()
    for user in users:
        found.setdefault(user.email, user.language)
    targets = session.scalars(
        sa.select(NotificationTarget)
        .where(
            NotificationTarget.customer_id == customer.id,
            NotificationTarget.enabled.is_(True),
            NotificationTarget.channel == DeliveryChannel.EMAIL,
        )
        .order_by(NotificationTarget.id)
    ).all()
    for target in targets:
        found.setdefault(target.address.strip().lower(), target.language or customer.language)
    return sorted(found.items())


def _addr(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:16]


def _queue(
    session: Session,
    customer: Customer,
    key: str,
    event: str,
    *,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    added = 0
    for address, language in recipients(session, customer):
        added += insert(
            session,
            dedup_key=f"{key}:{customer.id}:{_addr(address)}",
            event=event,
            channel=DeliveryChannel.EMAIL,
            recipient=address,
            language=language,
            payload={
                **payload,
                "customer": customer.name,
                "timezone": customer.timezone,
                "language": language,
            },
            due_at=now,
            customer_id=customer.id,
            billable=False,
        )
    return added


def _customers(session: Session, ids: Sequence[int] | None) -> Sequence[Customer]:
    query = sa.select(Customer).where(Customer.active.is_(True)).order_by(Customer.id)
    if ids is not None:
        query = query.where(Customer.id.in_(list(ids)))
    return session.scalars(query).all()


def announce(
    session: Session,
    *,
    title: str,
    body: str = "",
    starts_at: datetime,
    ends_at: datetime,
    components: Sequence[str] = (),
    customer_ids: Sequence[int] | None = None,
    lead_hours: int | None = None,
    mute_alarms: bool = False,
) -> Announcement:
    """Plan a maintenance window; it is mailed ``lead_hours`` (default: the
    setting) before ``starts_at`` by :func:`announce_due`. With
    ``mute_alarms`` the affected customers' alarms are muted during it (one
    :class:`~cloud.models.MaintenanceWindow` per customer listed, or one for
    every customer). The caller commits."""
    if ends_at <= starts_at:
        raise ValueError("maintenance must end after it starts")
    row = Announcement(
        title=title,
        body=body,
        starts_at=starts_at,
        ends_at=ends_at,
        components=list(components),
        customer_ids=None if customer_ids is None else list(customer_ids),
        lead_hours=lead_hours,
        mutes_alarms=mute_alarms,
    )
    session.add(row)
    session.flush()
    if mute_alarms:
        session.add_all(windows_for(row))
        session.flush()
    return row


def announce_due(session: Session, now: datetime, default_lead_hours: int) -> int:
    """Queue mail for every announcement whose lead time has come and whose
    window has not ended; return the ledger rows added. The caller commits."""
    added = 0
    pending = session.scalars(
        sa.select(Announcement)
        .where(Announcement.notified_at.is_(None), Announcement.ends_at > now)
        .order_by(Announcement.starts_at)
    ).all()
    for a in pending:
        lead = timedelta(hours=default_lead_hours if a.lead_hours is None else a.lead_hours)
        if now < a.starts_at - lead:
            continue
        payload = {
            "kind": "maintenance",
            "title": a.title,
            "body": a.body,
            "starts_at": a.starts_at.isoformat(),
            "ends_at": a.ends_at.isoformat(),
            "components": list(a.components or []),
            "mutes_alarms": bool(a.mutes_alarms),
        }
        for customer in _customers(session, a.customer_ids):
            added += _queue(
                session, customer, f"maintenance:{a.id}", "maintenance", payload=payload, now=now
            )
        a.notified_at = now
    return added


def failure_notices(
    session: Session, components: Sequence[str], now: datetime, after_min: int
) -> int:
    """Queue failure notices for components down at least ``after_min``
    minutes, and recovery notices for outages that had one and are over.
    Return the ledger rows added. The caller commits."""
    added = 0
    for component in components:
        start = outage_start(session, component, now)
        if start is not None:
            if now - start >= timedelta(minutes=after_min):
                payload = {"kind": "failure", "component": component, "since": start.isoformat()}
                key = f"failure:{component}:{int(start.timestamp())}"
                for customer in _customers(session, None):
                    added += _queue(session, customer, key, "failure", payload=payload, now=now)
            continue
        ended = _last_outage(session, component, now)
        if ended is None:
            continue
        first_down, back_up = ended
        stamp = int(first_down.timestamp())
        notified = session.scalar(
            sa.select(Delivery.id)
            .where(Delivery.dedup_key.like(f"failure:{component}:{stamp}:%"))
            .limit(1)
        )
        if notified is None:
            continue
        payload = {
            "kind": "recovery",
            "component": component,
            "since": first_down.isoformat(),
            "until": back_up.isoformat(),
        }
        for customer in _customers(session, None):
            added += _queue(
                session,
                customer,
                f"recovery:{component}:{stamp}",
                "recovery",
                payload=payload,
                now=now,
            )
    return added


def _last_outage(
    session: Session, component: str, now: datetime, window: timedelta = timedelta(days=1)
) -> tuple[datetime, datetime] | None:
    """(first down minute, first up minute after it) of the most recent outage
    that ended within ``window`` before ``now``, if the component is up now."""
    H = HealthCheck
    last_down = session.scalar(
        sa.select(sa.func.max(H.at)).where(
            H.component == component, H.ok.is_(False), H.at <= now, H.at >= now - window
        )
    )
    if last_down is None:
        return None
    back_up = session.scalar(
        sa.select(sa.func.min(H.at)).where(H.component == component, H.ok, H.at > last_down)
    )
    if back_up is None:
        return None
    before = session.scalar(
        sa.select(sa.func.max(H.at)).where(H.component == component, H.ok, H.at < last_down)
    )
    first_down = sa.select(sa.func.min(H.at)).where(H.component == component, H.ok.is_(False))
    if before is not None:
        first_down = first_down.where(H.at > before)
    start = session.scalar(first_down)
    return None if start is None else (start, back_up)
