"""Who gets a notification: resolve a customer's targets for one alarm event.

A target matches an event when it is enabled, belongs to the terminal's
customer, its ``terminal_id`` is None or the terminal, its ``channel_name``
is None or the alarm's channel (a measured channel or a contact input), its
``cond`` is None or the alarm's condition, and its ``min_severity`` is at
most the event's severity; recovery events additionally need ``notify_recovery``.
Several matching targets with the same address (say one for the whole
customer and one for a terminal) are one recipient: the most specific target
represents it, so each person gets one message per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Customer, DeliveryChannel, NotificationTarget, Severity
from cloud.models.notifications import check_address

SEVERITY_RANK = {Severity.WARNING: 1, Severity.ALARM: 2}


@dataclass(frozen=True)
class Recipient:
    """One resolved recipient of one event."""

    target_id: int
    channel: DeliveryChannel
    address: str
    language: str


def at_least(severity: Severity, minimum: Severity) -> bool:
    """True if ``severity`` is ``minimum`` or worse."""
    return SEVERITY_RANK[Severity(severity)] >= SEVERITY_RANK[Severity(minimum)]


def resolve(
    session: Session,
    customer: Customer | None,
    terminal_id: str,
    cond: str,
    severity: Severity,
    *,
    recovery: bool = False,
    channel: str | None = None,
) -> list[Recipient]:
    """Recipients of an event of ``severity`` about ``cond`` on ``terminal_id``
    (on its ``channel``; None: the terminal itself).

    Empty for a terminal without a customer or an inactive customer. Sorted
    by target id so ledger rows are written in a stable order.
    """
    if customer is None or not customer.active:
        return []
    T = NotificationTarget
    rows = session.scalars(
        sa.select(T)
        .where(
            T.customer_id == customer.id,
            T.enabled.is_(True),
            sa.or_(T.terminal_id.is_(None), T.terminal_id == terminal_id),
            sa.or_(T.cond.is_(None), T.cond == cond),
            sa.or_(T.channel_name.is_(None), T.channel_name == channel),
        )
        .order_by(T.id)
    ).all()
    best: dict[tuple[DeliveryChannel, str], NotificationTarget] = {}
    for target in rows:
        if not at_least(severity, target.min_severity):
            continue
        if recovery and not target.notify_recovery:
            continue
        key = (DeliveryChannel(target.channel), check_address(target.channel, target.address))
        have = best.get(key)
        if have is None or _specificity(target) > _specificity(have):
            best[key] = target
    return sorted(
        (
            Recipient(t.id, channel, address, t.language or customer.language)
            for (channel, address), t in best.items()
        ),
        key=lambda r: r.target_id,
    )


def _specificity(target: NotificationTarget) -> int:
    # A per-terminal target says more about intent than a per-channel one,
    # and that more than a per-condition one.
    return (
        (4 if target.terminal_id is not None else 0)
        + (2 if target.channel_name is not None else 0)
        + (1 if target.cond is not None else 0)
    )
