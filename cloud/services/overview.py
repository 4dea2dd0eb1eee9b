"""The fleet overview: every terminal a viewer may see, worst first, one line each.

Each terminal gets one :class:`Status`, the first that applies:

1. ``alarm`` / 2. ``warning``: an open alarm of that severity on a measured
   condition (leakage, limits, contacts, demand);
3. ``offline``: the cloud concluded the terminal is offline;
4. ``sensor``: an open sensor-trouble alarm (sensor unreachable, value
   stale, clock unsynchronised);
5. ``new``: never heard from (registered, not yet connected);
6. ``normal``;
7. ``inactive``: suspended or decommissioned (ranked last whatever else).

The ranking is one SQL expression, so sorting, filtering, counting and
paging 1,000 terminals happen in the database; a page costs a fixed number
of queries (terminals, counts, key channels and labels, latest values,
completeness) whatever its length, never one per terminal.

Data completeness = samples received / samples expected over the last
``days`` UTC days up to now (today included). Received counts come from the
ingest's per-terminal, per-day counters, which count a late sample on the
day of its own timestamp, so data drained from a terminal's outbox fills
its gap. Expected = for each current channel, the seconds it existed in the
window (from its birth declaration) divided by its sampling interval (the
config in force, else the site default). Samples of the last upload period
may not have arrived yet, so a healthy terminal can read slightly below
100 %; the figure is capped at 100 %.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, selectinload

from cloud.models import (
    Alarm,
    AlarmState,
    Channel,
    Connectivity,
    IngestCounter,
    Severity,
    Terminal,
    TerminalStatus,
    as_utc,
)
from cloud.services import configs, labels
from cloud.services.labels import ChannelRef, Label
from cloud.services.scope import Viewer, scoped
from cloud.timeseries import Point, TimeSeriesStore

PAGE_SIZE = 50
COMPLETENESS_DAYS = 7
# At most this many values on one line (key channels, then alarmed ones).
MAX_VALUES = 6
SENSOR_CONDS = ("unreach", "unreachable", "stale", "clock")
# Alarms about the link or the sensors, not about the measured values.
TECHNICAL_CONDS = (*SENSOR_CONDS, "offline")
MAX_QUERY = 100


class Status(enum.StrEnum):
    """A terminal's state on the overview, worst first (see the module docstring)."""

    ALARM = "alarm"
    WARNING = "warning"
    OFFLINE = "offline"
    SENSOR = "sensor"
    NEW = "new"
    NORMAL = "normal"
    INACTIVE = "inactive"


RANKED = tuple(Status)
# Statuses someone should look at.
ATTENTION = (Status.ALARM, Status.WARNING, Status.OFFLINE, Status.SENSOR)


@dataclass(frozen=True)
class Completeness:
    received: int
    expected: int

    @property
    def ratio(self) -> float | None:
        if self.expected <= 0:
            return None
        return min(1.0, self.received / self.expected)


@dataclass(frozen=True)
class Value:
    """One channel on a terminal's line: its label, newest sample and the
    severity of its open alarm (None: no open alarm)."""

    label: Label
    point: Point | None
    severity: str | None = None


@dataclass
class Row:
    terminal: Terminal
    status: Status
    alarms: int  # open alarms of severity alarm
    warnings: int  # open alarms of severity warning
    values: list[Value] = field(default_factory=list)
    hidden: int = 0  # channels not on the line
    completeness: Completeness | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class Query:
    """What the viewer asked for: text search (terminal id, name, address),
    one status, one customer (staff only), a page."""

    text: str = ""
    status: Status | None = None
    customer_id: int | None = None
    page: int = 1


@dataclass
class Overview:
    counts: dict[Status, int]  # per status, for everything the search matches
    rows: list[Row]
    total: int  # rows matching the search and the status filter
    page: int
    pages: int

    @property
    def attention(self) -> int:
        return sum(self.counts.get(s, 0) for s in ATTENTION)


# -- ranking ---------------------------------------------------------------------


def _open_alarms() -> sa.Subquery:
    """Per terminal with open alarms: counts by severity of measured conditions,
    whether a sensor condition is open, and the newest raise."""
    measured = Alarm.cond.not_in(TECHNICAL_CONDS)

    def n(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((cond, 1), else_=0))

    return (
        sa.select(
            Alarm.terminal_id.label("tid"),
            n(sa.and_(measured, Alarm.severity == Severity.ALARM)).label("alarms"),
            n(sa.and_(measured, Alarm.severity == Severity.WARNING)).label("warnings"),
            n(Alarm.cond.in_(SENSOR_CONDS)).label("sensor"),
            sa.func.max(Alarm.raised_at).label("newest"),
        )
        .where(Alarm.state != AlarmState.CLEARED)
        .group_by(Alarm.terminal_id)
        .subquery("open_alarms")
    )


def _rank(flags: sa.Subquery) -> sa.ColumnElement[int]:
    """The index of the terminal's status in :data:`RANKED`."""
    return sa.case(
        (Terminal.status != TerminalStatus.ACTIVE, RANKED.index(Status.INACTIVE)),
        (flags.c.alarms > 0, RANKED.index(Status.ALARM)),
        (flags.c.warnings > 0, RANKED.index(Status.WARNING)),
        (Terminal.connectivity == Connectivity.OFFLINE, RANKED.index(Status.OFFLINE)),
        (flags.c.sensor > 0, RANKED.index(Status.SENSOR)),
        (Terminal.connectivity == Connectivity.UNKNOWN, RANKED.index(Status.NEW)),
        else_=RANKED.index(Status.NORMAL),
    )


def _search(stmt: sa.Select, text: str) -> sa.Select:
    words = text.strip()[:MAX_QUERY].split()
    for word in words:
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(
            sa.or_(
                Terminal.id.ilike(pattern, escape="\\"),
                Terminal.name.ilike(pattern, escape="\\"),
                Terminal.site_address.ilike(pattern, escape="\\"),
            )
        )
    return stmt


def fleet(
    session: Session,
    store: TimeSeriesStore,
    viewer: Viewer,
    now: datetime,
    query: Query,
    *,
    default_interval_s: int,
    page_size: int = PAGE_SIZE,
) -> Overview:
    """One page of the viewer's terminals, worst first, with the status counts.

    Text words must all match (each in the id, name or site address, case
    folded); the counts cover the search and the customer, not the status
    filter, so the summary still tells how many of each there are.
    """
    flags = _open_alarms()
    rank = _rank(flags).label("rank")
    base = (
        scoped(viewer, Terminal)
        .outerjoin(flags, flags.c.tid == Terminal.id)
        .with_only_columns(Terminal.id, rank)
    )
    if query.customer_id is not None:
        base = base.where(Terminal.customer_id == query.customer_id)
    base = _search(base, query.text)
    ranked = base.subquery("ranked")
    counts = {s: 0 for s in RANKED}
    for r, n in session.execute(sa.select(ranked.c.rank, sa.func.count()).group_by(ranked.c.rank)):
        counts[RANKED[int(r)]] = int(n)
    total = counts[query.status] if query.status is not None else sum(counts.values())
    pages = max(1, -(-total // page_size))
    page = min(max(1, query.page), pages)
    stmt = (
        sa.select(Terminal, ranked.c.rank, flags.c.alarms, flags.c.warnings)
        .join(ranked, ranked.c.id == Terminal.id)
        .outerjoin(flags, flags.c.tid == Terminal.id)
        .options(selectinload(Terminal.customer))
        .order_by(
            ranked.c.rank,
            sa.nulls_last(flags.c.newest.desc()),
            Terminal.name,
            Terminal.id,
        )
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    if query.status is not None:
        stmt = stmt.where(ranked.c.rank == RANKED.index(query.status))
    rows = [
        Row(t, RANKED[int(r)], int(a or 0), int(w or 0))
        for t, r, a, w in session.execute(stmt).all()
    ]
    _fill(session, store, rows, now, default_interval_s)
    return Overview(counts, rows, total, page, pages)


# -- one line per terminal ---------------------------------------------------------


def _fill(
    session: Session,
    store: TimeSeriesStore,
    rows: list[Row],
    now: datetime,
    default_interval_s: int,
) -> None:
    """Key values, completeness and time of the newest sample of every row."""
    ids = [r.terminal.id for r in rows]
    if not ids:
        return
    channels = labels.current_channels(session, ids)
    texts = labels.texts_for(session, ids)
    alarmed = _alarmed_channels(session, ids)
    latest = store.latest_many(ids)
    done = completeness_many(
        session,
        [r.terminal for r in rows],
        channels,
        now,
        days=COMPLETENESS_DAYS,
        default_interval_s=default_interval_s,
    )
    for row in rows:
        tid = row.terminal.id
        every = [labels.label(ch, texts.get(tid, {}).get(ch.name)) for ch in channels[tid]]
        shown = labels.key_channels(every)
        shown += [lb for lb in every if lb.channel in alarmed.get(tid, {}) and lb not in shown]
        shown = shown[:MAX_VALUES]
        points = latest.get(tid, {})
        row.values = [
            Value(lb, points.get(lb.channel), alarmed.get(tid, {}).get(lb.channel)) for lb in shown
        ]
        row.hidden = len(every) - len(shown)
        row.completeness = done.get(tid)
        newest = max((p.ts for p in points.values()), default=None)
        row.updated_at = None if newest is None else datetime.fromtimestamp(newest, UTC)


def _alarmed_channels(session: Session, ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{terminal: {channel: worst open severity}}``."""
    out: dict[str, dict[str, str]] = {}
    for tid, channel, severity in session.execute(
        sa.select(Alarm.terminal_id, Alarm.channel, Alarm.severity).where(
            Alarm.terminal_id.in_(list(ids)),
            Alarm.state != AlarmState.CLEARED,
            Alarm.channel.is_not(None),
        )
    ):
        seen = out.setdefault(tid, {})
        if channel is not None and seen.get(channel) != Severity.ALARM:
            seen[channel] = str(severity)
    return out


# -- completeness ----------------------------------------------------------------


def completeness(
    session: Session, terminal: Terminal, now: datetime, *, days: int, default_interval_s: int
) -> Completeness:
    """Received / expected samples of ``terminal`` (see the module docstring)."""
    channels: dict[str, list[Channel]] = {terminal.id: list(terminal.channels)}
    return completeness_many(
        session, [terminal], channels, now, days=days, default_interval_s=default_interval_s
    )[terminal.id]


def completeness_many(
    session: Session,
    terminals: Sequence[Terminal],
    channels: Mapping[str, Sequence[Channel | ChannelRef]],
    now: datetime,
    *,
    days: int,
    default_interval_s: int,
) -> dict[str, Completeness]:
    """:func:`completeness` of several terminals in two queries; ``channels``
    holds each terminal's current channels."""
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    window_start = _midnight(first_day)
    ids = [t.id for t in terminals]
    received = dict(
        session.execute(
            sa.select(IngestCounter.terminal_id, sa.func.sum(IngestCounter.samples))
            .where(
                IngestCounter.terminal_id.in_(ids),
                IngestCounter.day >= first_day,
                IngestCounter.day <= today,
            )
            .group_by(IngestCounter.terminal_id)
        ).all()
    )
    documents = configs.last_documents(session, ids)
    out = {}
    for t in terminals:
        stored = documents.get(t.id)
        sampling = (stored[1].get("sampling") or {}) if stored else {}
        expected = 0.0
        for ch in channels.get(t.id, []):
            begin = max(window_start, as_utc(ch.declared_at))
            if t.contract_start is not None:
                begin = max(begin, _midnight(t.contract_start))
            seconds = (now - begin).total_seconds()
            if seconds > 0:
                expected += seconds / int(sampling.get(ch.name, default_interval_s))
        out[t.id] = Completeness(int(received.get(t.id) or 0), int(expected))
    return out


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
