"""The alarm state machine, and the entry point the ingest worker calls.

An :class:`~cloud.models.Alarm` is one occurrence of a condition on a
terminal (channel None) or one of its channels: raised -> acknowledged ->
cleared, with a severity (warning, alarm) that can go up (escalated) and
down (de-escalated) while it is open. Every change queues one ledger row
per recipient in the caller's transaction (see :mod:`cloud.notify.ledger`),
so the change and its notifications commit together; nothing here commits.

Terminals report each level of a rule as its own state machine (see
``edge/alarms.py``): warn raised, alarm raised (escalation), alarm cleared
(de-escalation while warn stays raised), warn cleared. The cloud folds them
into one alarm per (terminal, channel, cond):

=====================  ===========================  =========================
frame                  open alarm                   result
=====================  ===========================  =========================
raised L               none                         new alarm at L: raised
raised L               below L                      escalated (re-armed if acked)
raised L               at or above L                nothing (repeat)
cleared L              below L / none               nothing (repeat, reorder)
cleared alarm          at alarm, rule has warn      de-escalated to warning
cleared L              at L otherwise               cleared (recovery)
=====================  ===========================  =========================

"Rule has warn" is read from the terminal's ``AlarmCondition`` row (its base
``warn`` level); without a row the alarm clears on the alarm-level clear.

Concurrency: every entry point first locks the terminal's row (``SELECT ...
FOR UPDATE`` on PostgreSQL; on SQLite a no-op UPDATE takes the database's
write lock), so two ingest workers, or an ingest worker and the sweep, never
interleave on one terminal's alarms.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms import values
from cloud.alarms.lookups import (
    CLOCK,
    DEMAND,
    OFFLINE,
    SINGLE_LEVEL,
    STALE,
    OpenAlarms,
    condition,
    has_warn_level,
    lock_terminal,
    open_alarm,
    preload,
)
from cloud.alarms.notices import Context, notify
from cloud.alarms.policy import DEFAULT_POLICY, AlarmPolicy
from cloud.models import Alarm, AlarmState, Connectivity, Severity, Terminal, User, as_utc
from cloud.notify.targets import SEVERITY_RANK

LEVELS = {1: Severity.WARNING, 2: Severity.ALARM}
# Re-exported: the sweep and the views import them from here.
__all__ = [
    "CLOCK",
    "DEMAND",
    "OFFLINE",
    "SINGLE_LEVEL",
    "STALE",
    "Context",
    "OpenAlarms",
    "acknowledge",
    "clear_condition",
    "clear_level",
    "condition",
    "has_warn_level",
    "lock_terminal",
    "mark_offline",
    "mark_online",
    "on_frame",
    "open_alarm",
    "preload",
    "raise_condition",
    "raise_level",
    "remind_due",
    "resolve_manually",
    "set_clock",
]


def on_frame(
    session: Session,
    terminal: Terminal,
    frame: Mapping[str, Any],
    received_at: datetime,
    historical: bool,
    *,
    policy: AlarmPolicy = DEFAULT_POLICY,
    channels: Mapping[int, values.ChannelMeta] | None = None,
    preloaded: OpenAlarms | None = None,
) -> None:
    """Apply what ``frame`` (a decoded protocol frame dict) says about alarms.

    ``channels`` is the frame's boot's alias map as the caller resolved it
    (ingest reads that boot's data frames with the same map); an alarm on an
    alias not in it, or without it, is named from the channel table.
    ``preloaded`` is what :func:`preload` returned for this transaction when
    the caller locked the terminal itself (the ingest, once per batch).

    - live (not historical) frames of the current boot, death excepted: the
      terminal is connected now (clears ``offline``), and their ``unsynced``
      flag raises or clears the ``clock`` condition;
    - death (the broker's last will): terminal offline, unless a newer boot
      or a newer frame was already seen; the ``offline`` alarm itself comes
      from the sweep once the rule's delay has passed since the last frame;
    - alarm: the level state machine above; ``historical`` (late data from
      the terminal's queue) routes e-mail to a digest.

    Flushes but never commits: the caller commits the frame, the alarm
    changes and their ledger rows in one transaction. Raises
    :class:`cloud.errors.InvalidValue` for a naive ``received_at``.
    """
    received_at = as_utc(received_at)
    lock_terminal(session, terminal, preloaded)
    ctx = Context(received_at, historical, policy, preloaded)
    if frame.get("type") == "death":
        _on_death(session, terminal, frame, ctx)
        return
    boot = frame.get("boot")
    current = terminal.last_boot is None or not isinstance(boot, int) or boot >= terminal.last_boot
    if not historical and current:
        # Only live frames of the current boot say the terminal is there now
        # and what its clock is like now (the ingest's rule for "online" too):
        # queued frames may have waited at the broker while nobody listened.
        mark_online(session, terminal, received_at, policy, preloaded=preloaded)
        unsynced = bool(frame.get("unsynced"))
        set_clock(session, terminal, unsynced, received_at, policy, preloaded=preloaded)
    if frame.get("type") == "alarm":
        _on_alarm(session, terminal, frame, ctx, channels)


# -- public transitions (web views, sweep) ------------------------------------


def acknowledge(
    session: Session,
    alarm: Alarm,
    user_id: int | None,
    at: datetime,
    comment: str | None = None,
    *,
    policy: AlarmPolicy = DEFAULT_POLICY,
) -> None:
    """raised -> acknowledged: stops reminders and notifies the recipients.

    Raises :class:`cloud.errors.InvalidTransition` unless the alarm is raised.
    """
    at = as_utc(at)
    terminal = _terminal(session, alarm)
    lock_terminal(session, terminal)
    session.refresh(alarm)
    alarm.acknowledge(user_id, at, comment)
    if policy.notify_acknowledge:
        user = session.get(User, user_id) if user_id is not None else None
        extra = {"acked_by": (user.name or user.email) if user else "", "comment": comment or ""}
        notify(
            session,
            alarm,
            terminal,
            "acknowledged",
            at=at,
            ctx=Context(at, False, policy),
            key=f"acknowledged@{_epoch(at)}",
            extra=extra,
        )


def resolve_manually(
    session: Session, alarm: Alarm, at: datetime, policy: AlarmPolicy = DEFAULT_POLICY
) -> None:
    """Clear an open alarm by hand (an operator's decision, e.g. a sensor
    removed for good); recovery goes out as for any clear.
    Raises :class:`cloud.errors.InvalidTransition` if it is already cleared."""
    at = as_utc(at)
    terminal = _terminal(session, alarm)
    lock_terminal(session, terminal)
    session.refresh(alarm)
    alarm.clear(at)
    notify(
        session,
        alarm,
        terminal,
        "cleared",
        at=at,
        ctx=Context(at, False, policy),
        key="cleared",
        recovery=True,
    )


def raise_level(
    session: Session,
    terminal: Terminal,
    channel: str | None,
    cond: str,
    *,
    severity: Severity,
    value: float | None,
    threshold: float | None,
    at: datetime,
    ctx: Context,
) -> Alarm:
    """Raise ``cond`` at ``severity`` (new alarm, escalation, or a repeat)."""
    alarm = open_alarm(session, terminal.id, channel, cond, ctx.preloaded)
    if alarm is None:
        alarm = Alarm(
            terminal_id=terminal.id,
            channel=channel,
            cond=cond,
            severity=severity,
            state=AlarmState.RAISED,
            raised_at=at,
            value=value,
            threshold=threshold,
            historical=ctx.historical,
            reminders=0,
        )
        session.add(alarm)
        session.flush()
        if ctx.preloaded is not None:
            ctx.preloaded.add(alarm)
        notify(session, alarm, terminal, "raised", at=at, ctx=ctx, key="raised")
        return alarm
    if SEVERITY_RANK[severity] > SEVERITY_RANK[alarm.severity]:
        previous = alarm.severity
        alarm.severity, alarm.value, alarm.threshold = severity, value, threshold
        if alarm.state == AlarmState.ACKNOWLEDGED:
            # The ack was for the milder state; a worse one needs a new ack.
            alarm.state = AlarmState.RAISED
        notify(
            session,
            alarm,
            terminal,
            "escalated",
            at=at,
            ctx=ctx,
            key=f"escalated@{_epoch(at)}",
            extra={"previous_severity": str(previous)},
        )
    return alarm


def clear_level(
    session: Session,
    terminal: Terminal,
    channel: str | None,
    cond: str,
    *,
    severity: Severity,
    value: float | None,
    at: datetime,
    ctx: Context,
) -> Alarm | None:
    """Clear level ``severity`` of ``cond``: de-escalate or clear (see the table)."""
    alarm = open_alarm(session, terminal.id, channel, cond, ctx.preloaded)
    if alarm is None or SEVERITY_RANK[severity] < SEVERITY_RANK[alarm.severity]:
        return alarm
    if severity == Severity.ALARM and has_warn_level(session, terminal.id, channel, cond):
        _deescalate(
            session,
            alarm,
            terminal,
            severity=Severity.WARNING,
            value=value,
            threshold=None,
            at=at,
            ctx=ctx,
        )
        return alarm
    alarm.clear(at, value)
    notify(session, alarm, terminal, "cleared", at=at, ctx=ctx, key="cleared", recovery=True)
    return alarm


def raise_condition(
    session: Session,
    terminal: Terminal,
    channel: str | None,
    cond: str,
    *,
    severity: Severity,
    value: float | None,
    threshold: float | None,
    ctx: Context,
) -> Alarm:
    """Raise a cloud-side condition at ``severity`` (escalate or de-escalate
    an open one to exactly that severity)."""
    alarm = open_alarm(session, terminal.id, channel, cond, ctx.preloaded)
    if alarm is not None and SEVERITY_RANK[severity] < SEVERITY_RANK[alarm.severity]:
        _deescalate(
            session,
            alarm,
            terminal,
            severity=severity,
            value=value,
            threshold=threshold,
            at=ctx.now,
            ctx=ctx,
        )
        return alarm
    return raise_level(
        session,
        terminal,
        channel,
        cond,
        severity=severity,
        value=value,
        threshold=threshold,
        at=ctx.now,
        ctx=ctx,
    )


def clear_condition(
    session: Session,
    terminal: Terminal,
    channel: str | None,
    cond: str,
    *,
    value: float | None,
    ctx: Context,
) -> Alarm | None:
    """Clear a cloud-side condition whatever its severity (no-op if not open)."""
    alarm = open_alarm(session, terminal.id, channel, cond, ctx.preloaded)
    if alarm is None:
        return None
    alarm.clear(ctx.now, value)
    notify(session, alarm, terminal, "cleared", at=ctx.now, ctx=ctx, key="cleared", recovery=True)
    return alarm


def remind_due(session: Session, now: datetime, policy: AlarmPolicy = DEFAULT_POLICY) -> int:
    """Queue reminders for raised (unacknowledged), live alarms whose interval
    has passed since they were raised, escalated after an ack, or last
    reminded. A sweep that was down for hours sends one reminder, not a
    backlog. Returns how many alarms were reminded."""
    interval = policy.reminder_interval
    if interval is None:
        return 0
    now = as_utc(now)
    candidates = session.scalars(
        sa.select(Alarm)
        .where(
            Alarm.state == AlarmState.RAISED,
            Alarm.historical.is_(False),
            Alarm.raised_at <= now - interval,
        )
        .order_by(Alarm.id)
    ).all()
    reminded = 0
    for alarm in candidates:
        terminal = _terminal(session, alarm)
        lock_terminal(session, terminal)
        session.refresh(alarm)
        if alarm.state != AlarmState.RAISED:
            continue
        if policy.max_reminders is not None and alarm.reminders >= policy.max_reminders:
            continue
        basis = max(t for t in (alarm.raised_at, alarm.last_reminder_at, alarm.acked_at) if t)
        if basis + interval > now:
            continue
        alarm.reminded(now)
        notify(
            session,
            alarm,
            terminal,
            "reminder",
            at=now,
            ctx=Context(now, False, policy),
            key=f"reminder-{alarm.reminders}",
            extra={"reminder": alarm.reminders},
        )
        reminded += 1
    return reminded


# -- terminal-level conditions -----------------------------------------------


def mark_online(
    session: Session,
    terminal: Terminal,
    at: datetime,
    policy: AlarmPolicy = DEFAULT_POLICY,
    *,
    preloaded: OpenAlarms | None = None,
) -> None:
    """The terminal was heard from at ``at``: online, ``offline`` cleared."""
    if terminal.last_seen_at is None or terminal.last_seen_at < at:
        terminal.last_seen_at = at
    if terminal.connectivity != Connectivity.ONLINE:
        terminal.connectivity, terminal.connectivity_since = Connectivity.ONLINE, at
    ctx = Context(at, False, policy, preloaded)
    clear_condition(session, terminal, None, OFFLINE, value=None, ctx=ctx)


def mark_offline(
    session: Session,
    terminal: Terminal,
    at: datetime,
    silent_s: float | None,
    policy: AlarmPolicy = DEFAULT_POLICY,
) -> None:
    """The terminal is gone (last will, or ``silent_s`` seconds without a frame)."""
    if terminal.connectivity != Connectivity.OFFLINE:
        terminal.connectivity, terminal.connectivity_since = Connectivity.OFFLINE, at
    cond = condition(session, terminal.id, None, OFFLINE)
    if cond is not None and not cond.enabled:
        return
    limit = cond.on_delay_s if cond is not None and cond.on_delay_s else policy.offline_after_s
    raise_level(
        session,
        terminal,
        None,
        OFFLINE,
        severity=Severity.ALARM,
        value=silent_s,
        threshold=float(limit) if silent_s is not None else None,
        at=at,
        ctx=Context(at, False, policy),
    )


def set_clock(
    session: Session,
    terminal: Terminal,
    unsynced: bool,
    at: datetime,
    policy: AlarmPolicy = DEFAULT_POLICY,
    *,
    preloaded: OpenAlarms | None = None,
) -> None:
    """Raise ``clock`` (warning) while live frames say unsynchronised; clear it after."""
    ctx = Context(at, False, policy, preloaded)
    if unsynced:
        cond = condition(session, terminal.id, None, CLOCK)
        if cond is None or cond.enabled:
            raise_level(
                session,
                terminal,
                None,
                CLOCK,
                severity=Severity.WARNING,
                value=None,
                threshold=None,
                at=at,
                ctx=ctx,
            )
    else:
        clear_condition(session, terminal, None, CLOCK, value=None, ctx=ctx)


# -- internals -----------------------------------------------------------------


def _on_death(session: Session, terminal: Terminal, frame: Mapping[str, Any], ctx: Context) -> None:
    boot = frame.get("boot")
    if terminal.last_boot is not None and isinstance(boot, int) and boot < terminal.last_boot:
        return  # the will of a connection older than the current boot
    if terminal.last_seen_at is not None and terminal.last_seen_at > ctx.now:
        return  # a newer frame was already processed: this will is stale
    # The will says the connection is gone: the terminal shows offline at
    # once. The alarm waits for the rule's delay as silence does (the sweep
    # raises it, counting from the last frame), so a link that drops and
    # comes back within the delay pages nobody and bills nothing.
    if terminal.connectivity != Connectivity.OFFLINE:
        terminal.connectivity, terminal.connectivity_since = Connectivity.OFFLINE, ctx.now


def _on_alarm(
    session: Session,
    terminal: Terminal,
    frame: Mapping[str, Any],
    ctx: Context,
    channels: Mapping[int, values.ChannelMeta] | None,
) -> None:
    severity = LEVELS.get(frame.get("level", 0))
    if severity is None:
        return
    cond = str(frame["cond"])
    alias = frame.get("alias")
    meta = None
    channel = None
    if alias is not None:
        meta = channels.get(int(alias)) if channels is not None else None
        if meta is None:
            meta = values.channel_for_alias(session, terminal.id, int(alias), int(frame["boot"]))
        # Without a birth for this boot the alias cannot be named; keep it visible.
        channel = meta.name if meta else f"#{alias}"
    exp = meta.exp if meta is not None and cond in values.SCALED_CONDS else 0
    value = values.scale(frame.get("value"), exp)
    threshold = values.scale(frame.get("threshold"), exp)
    if frame.get("unsynced") and not ctx.historical:
        at = ctx.now  # the terminal's clock is not to be trusted; ours is
    else:
        at = datetime.fromtimestamp(int(frame["ts"]), UTC)
    if frame.get("state") == "raised":
        raise_level(
            session,
            terminal,
            channel,
            cond,
            severity=severity,
            value=value,
            threshold=threshold,
            at=at,
            ctx=ctx,
        )
    else:
        clear_level(
            session, terminal, channel, cond, severity=severity, value=value, at=at, ctx=ctx
        )


def _deescalate(
    session: Session,
    alarm: Alarm,
    terminal: Terminal,
    *,
    severity: Severity,
    value: float | None,
    threshold: float | None,
    at: datetime,
    ctx: Context,
) -> None:
    previous = alarm.severity
    alarm.severity = severity
    if value is not None:
        alarm.value = value
    if threshold is not None:
        alarm.threshold = threshold
    # Everyone who heard of the worse level hears that it ended.
    notify(
        session,
        alarm,
        terminal,
        "deescalated",
        at=at,
        ctx=ctx,
        key=f"deescalated@{_epoch(at)}",
        severity=previous,
        extra={"previous_severity": str(previous)},
    )


def _terminal(session: Session, alarm: Alarm) -> Terminal:
    terminal = session.get(Terminal, alarm.terminal_id)
    assert terminal is not None  # alarms.terminal_id is a foreign key
    return terminal


def _epoch(at: datetime) -> int:
    return int(at.timestamp())
