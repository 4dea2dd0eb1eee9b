"""Writing the notification ledger (the outbox) and reading it for billing.

Every function here only adds or changes rows in the caller's session and
transaction: the alarm change and its ledger rows commit together or not at
all. Nothing is sent from here; :mod:`cloud.notify.outbox` does that.

Dedup keys (unique in the ledger; a second insert of the same key is a no-op):

==============================================  ================================
``alarm:<alarm>:<event>:<target>``              raised, cleared (once per alarm)
``alarm:<alarm>:<event>@<epoch>:<target>``      escalated, deescalated,
                                                acknowledged (may repeat)
``alarm:<alarm>:reminder-<n>:<target>``         the n-th reminder
``digest:<terminal>:<window>:<target>[#n]``     historical alarms, per window
``test:<target>:<epoch us>``                    test message (not billable)
``fwd:<endpoint>:<terminal>:<body sha256>``     SenML forwarding (not billable)
==============================================  ================================

Billing (decided here, used by the invoices): a *billable notification* is
one ledger row with ``billable`` true that reached ``sent``: one e-mail or
alarm webhook actually delivered to one recipient for an alarm state change
(raised, escalated, de-escalated, acknowledged, cleared), a reminder, or a
digest of historical alarms (one digest is one notification, however many
alarms it lists). Test messages and data forwarding are never billable;
dead (undelivered) rows are not billed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.models import (
    Customer,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    NotificationTarget,
)
from cloud.models.notifications import check_address
from cloud.notify import wake
from cloud.notify.targets import Recipient

MAX_DIGEST_ITEMS = 200
_OVERFLOW_TRIES = 50


def insert(
    session: Session,
    *,
    dedup_key: str,
    event: str,
    channel: DeliveryChannel,
    recipient: str,
    language: str,
    payload: dict[str, Any],
    due_at: datetime,
    alarm_id: int | None = None,
    customer_id: int | None = None,
    target_id: int | None = None,
    billable: bool = True,
    created_at: datetime | None = None,
) -> bool:
    """Queue one notification; False if ``dedup_key`` is already in the ledger.

    ``created_at`` defaults to ``due_at`` (notifications are due when made).
    Delivery workers are woken when the caller's transaction commits
    (:mod:`cloud.notify.wake`).

    Uses INSERT ... ON CONFLICT DO NOTHING, so two processes inserting the
    same notification concurrently end up with one row and no error.
    """
    session.flush()  # the alarm row the FK points at must exist first
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert_fn(Delivery)
        .values(
            dedup_key=dedup_key,
            event=event,
            channel=channel,
            recipient=recipient,
            language=language,
            payload=payload,
            status=DeliveryStatus.QUEUED,
            attempts=0,
            next_attempt_at=due_at,
            alarm_id=alarm_id,
            customer_id=customer_id,
            target_id=target_id,
            billable=billable,
            created_at=created_at or due_at,
        )
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT inserts.
        .returning(Delivery.id)
    )
    added = session.execute(stmt).first() is not None
    if added:
        wake.announce(session)
    return added


def queue_for(
    session: Session,
    recipients: list[Recipient],
    *,
    key: str,
    event: str,
    payload: dict[str, Any],
    due_at: datetime,
    alarm_id: int | None,
    customer_id: int | None,
) -> int:
    """One row per recipient with dedup key ``<key>:<target id>``; returns rows added."""
    added = 0
    for r in recipients:
        added += insert(
            session,
            dedup_key=f"{key}:{r.target_id}",
            event=event,
            channel=r.channel,
            recipient=r.address,
            language=r.language,
            payload={**payload, "language": r.language},
            due_at=due_at,
            alarm_id=alarm_id,
            customer_id=customer_id,
            target_id=r.target_id,
        )
    return added


def add_to_digest(
    session: Session,
    recipients: list[Recipient],
    *,
    terminal_id: str,
    header: dict[str, Any],
    item: dict[str, Any],
    received_at: datetime,
    window: timedelta,
    customer_id: int | None,
) -> None:
    """Append ``item`` to each recipient's digest for the window holding ``received_at``.

    The digest row becomes due at the window's end. A row a worker already
    claimed (attempts > 0) or sent is never changed: the item goes into an
    overflow row ``...#n`` instead, so no listed alarm is lost and no mail
    changes after it was sent.
    """
    width = int(window.total_seconds())
    start = int(received_at.timestamp()) // width * width
    due = datetime.fromtimestamp(start + width, received_at.tzinfo)
    for r in recipients:
        base = f"digest:{terminal_id}:{start}:{r.target_id}"
        for n in range(_OVERFLOW_TRIES):
            key = base if n == 0 else f"{base}#{n}"
            insert(
                session,
                dedup_key=key,
                event="digest",
                channel=r.channel,
                recipient=r.address,
                language=r.language,
                payload={**header, "language": r.language, "items": [], "omitted": 0},
                due_at=due,
                customer_id=customer_id,
                target_id=r.target_id,
                created_at=received_at,
            )
            row = session.scalars(
                sa.select(Delivery)
                .where(Delivery.dedup_key == key)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).one()
            if row.status == DeliveryStatus.QUEUED and row.attempts == 0:
                payload = dict(row.payload or {})
                items = list(payload.get("items", []))
                if len(items) < MAX_DIGEST_ITEMS:
                    items.append(item)
                else:
                    payload["omitted"] = int(payload.get("omitted", 0)) + 1
                payload["items"] = items
                row.payload = payload  # a new dict, so the JSON column sees the change
                break


def queue_test(session: Session, target: NotificationTarget, now: datetime) -> bool:
    """Queue a test message to ``target`` (never billable)."""
    customer = session.get(Customer, target.customer_id)
    language = target.language or (customer.language if customer else "ja")
    payload = {
        "kind": "test",
        "customer": customer.name if customer else "",
        "timezone": customer.timezone if customer else "Asia/Tokyo",
        "at": now.isoformat(),
        "language": language,
    }
    return insert(
        session,
        dedup_key=f"test:{target.id}:{int(now.timestamp() * 1_000_000)}",
        event="test",
        channel=DeliveryChannel(target.channel),
        recipient=check_address(target.channel, target.address),
        language=language,
        payload=payload,
        due_at=now,
        customer_id=target.customer_id,
        target_id=target.id,
        billable=False,
    )


def billable_count(session: Session, customer_id: int, start: datetime, end: datetime) -> int:
    """Billable notifications delivered to ``customer_id`` with ``start <= sent_at < end``."""
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Delivery)
            .where(
                Delivery.customer_id == customer_id,
                Delivery.billable.is_(True),
                Delivery.status == DeliveryStatus.SENT,
                Delivery.sent_at >= start,
                Delivery.sent_at < end,
            )
        )
        or 0
    )
