"""Recording health checks and computing availability from them.

Unit of account: the UTC minute. Each component has at most one row per
minute in ``health_checks``; several checks within a minute fold into one
row that is up only if all of them were.

Monthly availability of a component (calendar month in the given zone, JST
by default, up to "now" for the month in progress, and from the service's
start: the first health check ever recorded, or a later ``since`` such as
the day a customer joined):

    up minutes / minutes in the period x 100

Minutes before the service started are not in the period at all: a site
installed on the 20th reads 100 % on the 21st, not 2/3 of that.

A minute with no row is **unknown and counts as down**: the checker, its
host or the database being away is exactly when nobody can prove the service
was up, and an SLA figure must not improve because evidence is missing. The
service as a whole is up in a minute only if every listed component has an up
row for that minute. Planned maintenance is not excluded (the figure is the
strict one; maintenance minutes appear as down).

Percentages are :class:`decimal.Decimal` rounded *down* to 0.001, so 99.4999 %
never reads as 99.500 %.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloud.models.ops import HealthCheck
from cloud.ops.health import Result
from cloud.ops.schedule import next_month

JST = ZoneInfo("Asia/Tokyo")
SERVICE = "service"


def minute_of(at: datetime) -> datetime:
    """Start of the UTC minute holding ``at``."""
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def record(session: Session, results: Iterable[Result], at: datetime) -> int:
    """Store ``results`` for the minute holding ``at``; return rows written.

    A second result for the same component and minute keeps the row down if
    either was down (and the failing detail). The caller commits.
    """
    minute = minute_of(at)
    rows = [
        {
            "component": r.component,
            "at": minute,
            "ok": r.ok,
            "detail": r.detail[:500],
            "latency_ms": r.latency_ms,
            "figures": dict(r.figures) or None,
        }
        for r in results
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(HealthCheck).values(rows)
    failed = stmt.excluded.ok.is_(False)
    stmt = stmt.on_conflict_do_update(
        index_elements=["component", "at"],
        set_={
            "ok": sa.and_(HealthCheck.ok, stmt.excluded.ok),
            "detail": sa.case((failed, stmt.excluded.detail), else_=HealthCheck.detail),
            "latency_ms": sa.func.max(HealthCheck.latency_ms, stmt.excluded.latency_ms)
            if dialect == "sqlite"
            else sa.func.greatest(HealthCheck.latency_ms, stmt.excluded.latency_ms),
            # The newest figures win (None: the check read none this time).
            "figures": sa.func.coalesce(stmt.excluded.figures, HealthCheck.figures),
        },
    )
    session.execute(stmt)
    return len(rows)


@dataclass(frozen=True)
class Figures:
    """Minutes of one component (or the whole service) over one period."""

    component: str
    total_minutes: int
    up_minutes: int
    down_minutes: int  # a row said down (for the service: some component down or missing)
    unknown_minutes: int  # no row at all

    @property
    def percent(self) -> Decimal | None:
        """Availability in percent, rounded down to 0.001; None for an empty period."""
        if self.total_minutes == 0:
            return None
        value = Decimal(self.up_minutes * 100) / Decimal(self.total_minutes)
        return value.quantize(Decimal("0.001"), rounding=ROUND_DOWN)

    def as_dict(self) -> dict[str, object]:
        pct = self.percent
        return {
            "component": self.component,
            "total_minutes": self.total_minutes,
            "up_minutes": self.up_minutes,
            "down_minutes": self.down_minutes,
            "unknown_minutes": self.unknown_minutes,
            "percent": None if pct is None else str(pct),
        }


@dataclass(frozen=True)
class Availability:
    """Figures of every component and of the service for one month."""

    month: date
    start: datetime
    end: datetime
    components: tuple[Figures, ...]
    service: Figures

    def as_dict(self) -> dict[str, object]:
        return {
            "month": self.month.strftime("%Y-%m"),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "components": [f.as_dict() for f in self.components],
            "service": self.service.as_dict(),
        }


def month_range(month: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month holding ``month`` in ``zone``."""
    first = month.replace(day=1)
    start = datetime.combine(first, time(0), zone).astimezone(UTC)
    end = datetime.combine(next_month(first), time(0), zone).astimezone(UTC)
    return start, end


def period(
    session: Session, components: Sequence[str], start: datetime, end: datetime
) -> tuple[list[Figures], Figures]:
    """Figures of ``components`` and the service over ``[start, end)`` (whole minutes)."""
    start, end = minute_of(start), minute_of(end)
    total = max(0, int((end - start).total_seconds()) // 60)
    H = HealthCheck
    in_range = sa.and_(H.at >= start, H.at < end, H.component.in_(list(components)))
    per = {
        row.component: (int(row.up or 0), int(row.rows))
        for row in session.execute(
            sa.select(
                H.component,
                sa.func.sum(sa.case((H.ok, 1), else_=0)).label("up"),
                sa.func.count().label("rows"),
            )
            .where(in_range)
            .group_by(H.component)
        )
    }
    figures = []
    for name in components:
        up, rows = per.get(name, (0, 0))
        figures.append(Figures(name, total, up, rows - up, total - rows))
    all_up = (
        sa.select(H.at)
        .where(in_range, H.ok)
        .group_by(H.at)
        .having(sa.func.count() == len(set(components)))
    ).subquery()
    service_up = int(session.scalar(sa.select(sa.func.count()).select_from(all_up)) or 0)
    seen = int(session.scalar(sa.select(sa.func.count(sa.distinct(H.at))).where(in_range)) or 0)
    service = Figures(SERVICE, total, service_up, seen - service_up, total - seen)
    return figures, service


def service_start(session: Session) -> datetime | None:
    """The minute of the first health check ever recorded; None before any."""
    first = session.scalar(sa.select(sa.func.min(HealthCheck.at)))
    return None if first is None else minute_of(first)


def monthly(
    session: Session,
    month: date,
    components: Sequence[str],
    *,
    zone: ZoneInfo = JST,
    now: datetime | None = None,
    since: datetime | None = None,
) -> Availability:
    """Availability of ``components`` and the service for the calendar month
    holding ``month`` in ``zone``; a month in progress counts up to ``now``
    (a future month has zero minutes and percent None). Only completed minutes
    count: the minute holding ``now`` is left out. The period starts no
    earlier than the service (:func:`service_start`) and ``since`` (a
    customer's start); a month wholly before them has percent None. For the
    web pages and ``python -m cloud.ops availability``."""
    start, end = month_range(month, zone)
    # Before the first check there was no service to be down.
    started = service_start(session)
    floors = [start, end if started is None else started]
    if since is not None:
        floors.append(minute_of(since))
    start = min(max(floors), end)
    if now is not None:
        end = max(start, min(end, minute_of(now)))
    figures, service = period(session, components, start, end)
    return Availability(month.replace(day=1), start, end, tuple(figures), service)


def outage_start(session: Session, component: str, now: datetime) -> datetime | None:
    """Start of the component's current outage: the first down minute after its
    last up minute, if its newest row is down; None while it is up (or unknown)."""
    H = HealthCheck
    newest = session.execute(
        sa.select(H.at, H.ok)
        .where(H.component == component, H.at <= now)
        .order_by(H.at.desc())
        .limit(1)
    ).first()
    if newest is None or newest.ok:
        return None
    last_up = session.scalar(
        sa.select(sa.func.max(H.at)).where(H.component == component, H.ok, H.at <= now)
    )
    first_down = sa.select(sa.func.min(H.at)).where(H.component == component, H.ok.is_(False))
    if last_up is not None:
        first_down = first_down.where(H.at > last_up)
    return session.scalar(first_down)


def prune(session: Session, before: datetime) -> int:
    """Delete rows older than ``before`` (evidence retention); return how many."""
    result = session.execute(sa.delete(HealthCheck).where(HealthCheck.at < before))
    return int(getattr(result, "rowcount", 0) or 0)
