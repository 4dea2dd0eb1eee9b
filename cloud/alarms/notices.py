"""From an alarm change to ledger rows: who hears of it, and what the message says.

:func:`notify` resolves the recipients and queues one ledger row each, in the
caller's transaction. Changes learnt from historical (late) data go to
people (e-mail and chat recipients) as a digest (see
:func:`cloud.notify.ledger.add_to_digest`); webhook recipients get every
event as it is learnt, flagged historical.
Events inside a maintenance window are recorded, not paged (:mod:`cloud.alarms.quiet`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms import quiet, values
from cloud.alarms.lookups import DEMAND, OFFLINE, OpenAlarms
from cloud.alarms.policy import DEFAULT_POLICY, AlarmPolicy
from cloud.models import Alarm, Delivery, DeliveryChannel, Severity, Terminal, as_utc
from cloud.notify import ledger
from cloud.notify.targets import resolve

# Units of value and threshold for conditions that are not about the
# channel's own quantity: (value unit, value decimals, threshold unit, decimals).
_COND_UNITS: dict[str, tuple[str, int | None, str, int | None]] = {
    OFFLINE: ("s", 0, "s", 0),
    DEMAND: ("kW", 1, "kW", 1),
    "unreach": ("", 0, "", 0),
    "unreachable": ("", 0, "", 0),
    "contact": ("", 0, "", 0),
}


# Events that page when nobody has heard of the alarm yet; a maintenance
# window mutes them. The others (cleared, de-escalated, acknowledged) follow a page.
_PAGING = frozenset({"raised", "escalated", "reminder"})


@dataclass(frozen=True)
class Context:
    """How the changes of one call are routed.

    ``now`` is when the cloud learnt of them (ledger rows are due then);
    ``historical`` sends e-mail recipients a digest instead of a page;
    ``preloaded`` answers open alarms of a batch's locked terminals.
    """

    now: datetime
    historical: bool = False
    policy: AlarmPolicy = DEFAULT_POLICY
    preloaded: OpenAlarms | None = None  # the caller's batch (lookups.preload), if any


def notify(
    session: Session,
    alarm: Alarm,
    terminal: Terminal,
    event: str,
    *,
    at: datetime,
    ctx: Context,
    key: str,
    severity: Severity | None = None,
    recovery: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Queue ``event`` on ``alarm`` for every recipient, dedup key
    ``alarm:<id>:<key>:<target>``. Recipients are those of ``severity``
    (default: the alarm's), recovery-minded ones only when ``recovery``.
    """
    customer = terminal.customer
    level = severity or alarm.severity
    if event in _PAGING and quiet.muted(session, terminal, alarm.channel, at):
        alarm.muted = True
        return
    recipients = resolve(
        session, customer, terminal.id, alarm.cond, level, recovery=recovery, channel=alarm.channel
    )
    if alarm.muted and event not in _PAGING:
        # Raised during maintenance: only whoever was told of it since hears more.
        told = _told(session, alarm)
        recipients = [r for r in recipients if r.target_id in told]
    if recovery and level != Severity.ALARM:
        # An alarm de-escalated before it cleared: whoever was paged at the
        # higher level must still hear that it is over.
        paged = _told(session, alarm)
        have = {r.target_id for r in recipients}
        recipients += [
            r
            for r in resolve(
                session,
                customer,
                terminal.id,
                alarm.cond,
                Severity.ALARM,
                recovery=True,
                channel=alarm.channel,
            )
            if r.target_id in paged and r.target_id not in have
        ]
    if not recipients:
        return
    payload = _payload(session, alarm, terminal, event, at=at, extra=extra or {})
    customer_id = customer.id if customer else None
    if ctx.historical:
        mails = [r for r in recipients if r.channel != DeliveryChannel.WEBHOOK]
        hooks = [r for r in recipients if r.channel == DeliveryChannel.WEBHOOK]
        header = {
            k: payload[k] for k in ("terminal_id", "terminal_name", "site", "customer", "timezone")
        }
        header["kind"] = "digest"
        item = {
            k: payload[k]
            for k in (
                "event",
                "alarm_id",
                "channel",
                "channel_label",
                "cond",
                "severity",
                "value_text",
                "threshold_text",
                "at",
            )
        }
        ledger.add_to_digest(
            session,
            mails,
            terminal_id=terminal.id,
            header=header,
            item=item,
            received_at=ctx.now,
            window=ctx.policy.digest_window,
            customer_id=customer_id,
        )
        recipients = hooks  # machines get every event as it is learnt
    ledger.queue_for(
        session,
        recipients,
        key=f"alarm:{alarm.id}:{key}",
        event=event,
        payload=payload,
        due_at=ctx.now,
        alarm_id=alarm.id,
        customer_id=customer_id,
    )


def _told(session: Session, alarm: Alarm) -> set[int | None]:
    """Targets that have a ledger row about ``alarm``."""
    return set(session.scalars(sa.select(Delivery.target_id).where(Delivery.alarm_id == alarm.id)))


def value_texts(session: Session, alarm: Alarm) -> tuple[str, str]:
    """The alarm's value and threshold as people read them, with their unit
    (``"31.2 mA"``; seconds for offline, kW for demand) or, for a labelled
    contact, its state names (入/切); "" for none."""
    meta = values.channel_by_name(session, alarm.terminal_id, alarm.channel)
    unit, decimals = (meta.unit, max(0, -meta.exp)) if meta else ("", None)
    v_unit, v_dec, t_unit, t_dec = _COND_UNITS.get(alarm.cond, (unit, decimals, unit, decimals))
    value_text = values.quantity(alarm.value, v_unit, v_dec)
    threshold_text = values.quantity(alarm.threshold, t_unit, t_dec)
    label = values.label_of(session, alarm.terminal_id, alarm.channel)
    if alarm.cond == "contact" and label is not None:
        # The customer's words for the contact's states (入/切), not 0/1.
        value_text = values.state_text(label, alarm.value) or value_text
        threshold_text = values.state_text(label, alarm.threshold) or threshold_text
    return value_text, threshold_text


def _payload(
    session: Session,
    alarm: Alarm,
    terminal: Terminal,
    event: str,
    *,
    at: datetime,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """A snapshot of the event: the message says what was true when it happened,
    whatever the alarm does before the worker renders it."""
    customer = terminal.customer
    label = values.label_of(session, terminal.id, alarm.channel)
    value_text, threshold_text = value_texts(session, alarm)
    return {
        "kind": "alarm",
        "event": event,
        "alarm_id": alarm.id,
        "terminal_id": terminal.id,
        "terminal_name": terminal.name or "",
        "site": terminal.site_address or "",
        "customer": customer.name if customer else "",
        "timezone": customer.timezone if customer else "Asia/Tokyo",
        "channel": alarm.channel,
        "channel_label": label.display_name if label else "",
        "cond": alarm.cond,
        "severity": str(alarm.severity),
        "state": str(alarm.state),
        "value": alarm.value,
        "threshold": alarm.threshold,
        "value_text": value_text,
        "threshold_text": threshold_text,
        "at": at.isoformat(),
        "raised_at": as_utc(alarm.raised_at).isoformat(),
        "historical": alarm.historical,
        **extra,
    }
