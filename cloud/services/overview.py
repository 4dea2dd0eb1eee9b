"""The dashboard: each terminal's connectivity, latest values, open alarms and
data completeness.

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

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Channel, Customer, IngestCounter, Terminal, as_utc
from cloud.services import alarms as alarm_service
from cloud.services import configs
from cloud.services.scope import Viewer, scoped
from cloud.timeseries import Point, TimeSeriesStore

PAGE_SIZE = 50


@dataclass(frozen=True)
class Completeness:
    received: int
    expected: int

    @property
    def ratio(self) -> float | None:
        if self.expected <= 0:
            return None
        return min(1.0, self.received / self.expected)


@dataclass
class Card:
    terminal: Terminal
    customer: Customer | None
    latest: list[tuple[Channel, Point | None]]
    open_alarms: dict[str, int]
    completeness: Completeness
    updated_at: datetime | None = None
    status_values: dict[str, float] = field(default_factory=dict)


def completeness(
    session: Session, terminal: Terminal, now: datetime, *, days: int, default_interval_s: int
) -> Completeness:
    """Received / expected samples of ``terminal`` (see the module docstring)."""
    today = now.astimezone(UTC).date()
    first_day = today - timedelta(days=days - 1)
    window_start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
    received = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(IngestCounter.samples), 0)).where(
            IngestCounter.terminal_id == terminal.id,
            IngestCounter.day >= first_day,
            IngestCounter.day <= today,
        )
    )
    stored = configs.last_document(session, terminal.id)
    sampling = (stored[1].get("sampling") or {}) if stored else {}
    expected = 0.0
    for ch in terminal.channels:
        begin = max(window_start, as_utc(ch.declared_at))
        if terminal.contract_start is not None:
            begin = max(begin, _midnight(terminal.contract_start))
        seconds = (now - begin).total_seconds()
        if seconds > 0:
            expected += seconds / int(sampling.get(ch.name, default_interval_s))
    return Completeness(int(received or 0), int(expected))


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def cards(
    session: Session,
    store: TimeSeriesStore,
    viewer: Viewer,
    now: datetime,
    *,
    default_interval_s: int,
    customer_id: int | None = None,
    page: int = 1,
) -> tuple[list[Card], int]:
    """One page of dashboard cards and the number of pages."""
    stmt = scoped(viewer, Terminal)
    if customer_id is not None:
        stmt = stmt.where(Terminal.customer_id == customer_id)
    total = int(session.scalar(stmt.with_only_columns(sa.func.count(Terminal.id))) or 0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(1, page), pages)
    terminals = list(
        session.scalars(
            stmt.order_by(Terminal.customer_id, Terminal.id)
            .offset((page - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        )
    )
    counts = alarm_service.open_counts(session, [t.id for t in terminals])
    out = []
    for t in terminals:
        latest = store.latest(t.id)
        values = [(ch, latest.get(ch.name)) for ch in t.channels]
        newest = max((p.ts for p in latest.values()), default=None)
        out.append(
            Card(
                terminal=t,
                customer=t.customer,
                latest=values,
                open_alarms=counts.get(t.id, {}),
                completeness=completeness(
                    session, t, now, days=7, default_interval_s=default_interval_s
                ),
                updated_at=datetime.fromtimestamp(newest, UTC) if newest is not None else None,
                status_values={
                    name[1:]: p.value for name, p in latest.items() if name.startswith("$")
                },
            )
        )
    return out, pages
