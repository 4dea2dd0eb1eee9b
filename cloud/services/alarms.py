"""Alarm history with filters, acknowledging, and each alarm's notification ledger."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.alarms import engine, notices, values
from cloud.errors import InvalidTransition
from cloud.models import Alarm, AlarmState, Delivery, Severity, Terminal
from cloud.services import audit, labels, series
from cloud.services.errors import N_, Invalid
from cloud.services.scope import ACKNOWLEDGE, Viewer, get_scoped, require, scoped

PAGE_SIZE = 50
MAX_COMMENT = 2000
# The alarm page's graph: at least this much before the alarm and after it cleared.
GRAPH_PAD_S = 3600
GRAPH_MAX_S = 7 * 86400


@dataclass(frozen=True)
class AlarmFilter:
    terminal_id: str | None = None
    state: str | None = None  # a state value, or "open" for raised + acknowledged
    severity: str | None = None
    cond: str | None = None
    start: datetime | None = None  # raised at or after
    end: datetime | None = None  # raised before
    page: int = 1


@dataclass(frozen=True)
class AlarmPage:
    alarms: list[tuple[Alarm, Terminal]]
    total: int
    page: int
    pages: int


def filtered(viewer: Viewer, f: AlarmFilter) -> sa.Select[Alarm]:
    """``SELECT`` of the alarms ``viewer`` may see matching ``f`` (every page)."""
    stmt = scoped(viewer, Alarm)
    if f.terminal_id:
        stmt = stmt.where(Alarm.terminal_id == f.terminal_id)
    if f.state == "open":
        stmt = stmt.where(Alarm.state != AlarmState.CLEARED)
    elif f.state in set(AlarmState):
        stmt = stmt.where(Alarm.state == AlarmState(f.state))
    if f.severity in set(Severity):
        stmt = stmt.where(Alarm.severity == Severity(f.severity))
    if f.cond:
        stmt = stmt.where(Alarm.cond == f.cond)
    if f.start is not None:
        stmt = stmt.where(Alarm.raised_at >= f.start)
    if f.end is not None:
        stmt = stmt.where(Alarm.raised_at < f.end)
    return stmt


def search(session: Session, viewer: Viewer, f: AlarmFilter) -> AlarmPage:
    """Alarms ``viewer`` may see matching ``f``, newest first, one page."""
    stmt = filtered(viewer, f)
    total = int(session.scalar(stmt.with_only_columns(sa.func.count(Alarm.id))) or 0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, f.page), pages)
    rows = session.execute(
        stmt.add_columns(Terminal)
        .order_by(Alarm.raised_at.desc(), Alarm.id.desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    ).all()
    return AlarmPage([(a, t) for a, t in rows], total, page, pages)


def open_counts(session: Session, terminal_ids: list[str]) -> dict[str, dict[str, int]]:
    """{terminal: {severity: open alarms}} for the dashboard."""
    if not terminal_ids:
        return {}
    rows = session.execute(
        sa.select(Alarm.terminal_id, Alarm.severity, sa.func.count())
        .where(Alarm.terminal_id.in_(terminal_ids), Alarm.state != AlarmState.CLEARED)
        .group_by(Alarm.terminal_id, Alarm.severity)
    ).all()
    out: dict[str, dict[str, int]] = {}
    for tid, severity, n in rows:
        out.setdefault(tid, {})[str(severity)] = int(n)
    return out


def ledger(session: Session, alarm: Alarm) -> list[Delivery]:
    """The notifications this alarm caused, oldest first."""
    return list(
        session.scalars(
            sa.select(Delivery)
            .where(Delivery.alarm_id == alarm.id)
            .order_by(Delivery.created_at, Delivery.id)
        )
    )


def acknowledge(
    session: Session,
    viewer: Viewer,
    alarm_id: object,
    comment: str,
    *,
    now: datetime,
    ip: str | None,
) -> Alarm:
    """Acknowledge an alarm ``viewer`` may see, with a comment; commits.

    Raises :class:`cloud.services.errors.NotFound` for an alarm of another
    customer and :class:`Invalid` if the alarm is not in the raised state.
    """
    require(viewer, ACKNOWLEDGE)
    alarm = get_scoped(session, viewer, Alarm, alarm_id)
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise Invalid(N_("The comment is longer than %(n)s characters."), n=MAX_COMMENT)
    try:
        engine.acknowledge(session, alarm, viewer.user_id, now, comment=comment or None)
    except InvalidTransition as err:
        session.rollback()
        raise Invalid(N_("Only a raised alarm can be acknowledged.")) from err
    terminal = session.get(Terminal, alarm.terminal_id)
    audit.record(
        session,
        viewer,
        "alarm.acknowledge",
        "alarm",
        alarm.id,
        at=now,
        ip=ip,
        customer_id=terminal.customer_id if terminal else None,
        details={"comment": comment},
    )
    session.commit()
    return alarm


@dataclass(frozen=True)
class AlarmDetail:
    """What the alarm page says besides the alarm's own fields."""

    channel_name: str  # the display name, else the wire name; "" for a terminal alarm
    value_text: str  # "58 mA"; a contact's state name
    threshold_text: str
    levels: list[tuple[str, str]]  # (severity, "50 mA") of the channel's rules in force now
    graph: tuple[int, int] | None  # epoch seconds around the alarm; None: no channel


def detail(session: Session, alarm: Alarm, now: datetime) -> AlarmDetail:
    """Values with their units, the levels in force and the graph's range: from
    an hour before the alarm rose (or half its length if longer, at most a
    week) to as long after it cleared, or to ``now`` while it is open."""
    value_text, threshold_text = notices.value_texts(session, alarm)
    if alarm.channel is None:
        return AlarmDetail("", value_text, threshold_text, [], None)
    meta = values.channel_by_name(session, alarm.terminal_id, alarm.channel)
    unit, decimals = (meta.unit, max(0, -meta.exp)) if meta else ("", None)
    raised = int(alarm.raised_at.timestamp())
    end = int((alarm.cleared_at or now).timestamp())
    pad = min(GRAPH_MAX_S, max(GRAPH_PAD_S, (end - raised) // 2))
    start, stop = raised - pad, min(int(now.timestamp()), end + pad)
    marks = series.graph_marks(session, alarm.terminal_id, alarm.channel, start, stop, now=now)
    levels = [
        (str(level["severity"]), values.quantity(level["value"], unit, decimals))
        for level in marks["levels"]
    ]
    name = labels.names(session, [alarm.terminal_id])(alarm.terminal_id, alarm.channel)
    return AlarmDetail(
        name, value_text, threshold_text, levels, (max(0, start), max(stop, raised + 60))
    )
