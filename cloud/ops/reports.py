"""Monthly report figures per customer and terminal.

For each terminal of a customer, over the calendar month in the customer's
zone (JST by default), limited to the part of the month under contract and
already past:

- **maximum leakage** and when: the largest sample of any ``leak`` channel
  (Io, Ior), found by drilling down day -> hour -> raw samples, so a month
  of one-second data costs three small queries, not a full scan;
- **maximum demand**: the largest 30-minute average of a ``power`` channel,
  periods aligned to :00/:30 local time (the demand of Japanese contracts);
- **energy**: use of each ``energy`` counter in the month: the sum of the
  rises between consecutive samples, a fall (counter reset, meter swap)
  counting as nothing. Above ``MAX_RAW_ENERGY`` samples a month it is taken
  from hourly min/max instead (rise within and between hours);
- **alarms**: every alarm of the terminal that was open at some time in the
  month;
- **data completeness** per channel: samples received / samples expected,
  expected = covered seconds / ``report_sample_interval_s``, capped at 100 %.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Alarm, Channel, ChannelLabel, Customer, Terminal
from cloud.ops.billing import contract_end, contract_start, local_month_range
from cloud.timeseries import Bucket, Point, TimeSeriesStore

DAY, HOUR, DEMAND_PERIOD = 86400, 3600, 1800
# Up to this many samples a month (a minute's sampling is 44640) the energy is
# summed sample by sample, so a counter reset is seen exactly.
MAX_RAW_ENERGY = 100_000


@dataclass(frozen=True)
class Peak:
    channel: str
    unit: str
    value: float
    at: datetime  # UTC; the sample's time, or the start of its 30-min period for demand


@dataclass(frozen=True)
class Energy:
    channel: str
    unit: str
    used: float


@dataclass(frozen=True)
class Completeness:
    channel: str
    received: int
    expected: int

    @property
    def percent(self) -> Decimal | None:
        if self.expected <= 0:
            return None
        pct = Decimal(min(self.received, self.expected) * 100) / Decimal(self.expected)
        return pct.quantize(Decimal("0.1"), rounding=ROUND_DOWN)


@dataclass(frozen=True)
class AlarmLine:
    channel: str | None
    cond: str
    severity: str
    state: str
    raised_at: datetime
    cleared_at: datetime | None
    value: float | None
    threshold: float | None


@dataclass(frozen=True)
class TerminalReport:
    terminal_id: str
    name: str
    site: str
    start: datetime  # covered range, UTC
    end: datetime
    leakage: Peak | None
    demand: Peak | None
    energy: tuple[Energy, ...]
    alarms: tuple[AlarmLine, ...]
    completeness: tuple[Completeness, ...]
    # The customer's display names of the channels that have one.
    channel_names: dict[str, str] = field(default_factory=dict)

    def channel_name(self, channel: str | None) -> str:
        """The display name, else the wire name ("" for no channel)."""
        return self.channel_names.get(channel or "", channel or "")

    @property
    def overall_completeness(self) -> Completeness:
        return Completeness(
            "*",
            sum(c.received for c in self.completeness),
            sum(c.expected for c in self.completeness),
        )


@dataclass(frozen=True)
class CustomerReport:
    customer_id: int
    customer_name: str
    month: date
    zone: str
    terminals: tuple[TerminalReport, ...]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)


def _covered(
    terminal: Terminal, lo: datetime, hi: datetime, zone: ZoneInfo, now: datetime
) -> tuple[datetime, datetime] | None:
    """Part of [lo, hi) under contract and not in the future."""
    start_day, end_day = contract_start(terminal), contract_end(terminal)
    if start_day is not None:
        lo = max(lo, datetime(start_day.year, start_day.month, start_day.day, tzinfo=zone))
    if end_day is not None:
        last = datetime(end_day.year, end_day.month, end_day.day, tzinfo=zone)
        hi = min(hi, last + timedelta(days=1))
    hi = min(hi, now)
    return (lo.astimezone(UTC), hi.astimezone(UTC)) if hi > lo else None


def _channels(session: Session, terminal_id: str, lo: datetime, hi: datetime) -> list[Channel]:
    """Channels the terminal had at some time in [lo, hi), newest row per name."""
    rows = session.scalars(
        sa.select(Channel)
        .where(
            Channel.terminal_id == terminal_id,
            Channel.declared_at < hi,
            sa.or_(Channel.retired_at.is_(None), Channel.retired_at >= lo),
        )
        .order_by(Channel.name, Channel.declared_at)
    ).all()
    by_name = {c.name: c for c in rows}
    return [by_name[n] for n in sorted(by_name)]


def peak(
    store: TimeSeriesStore, terminal: str, channel: str, lo: int, hi: int, *, tz_offset_s: int
) -> tuple[float, int] | None:
    """(largest value, epoch second of its first occurrence) in [lo, hi)."""
    days = store.aggregate(terminal, channel, lo, hi, DAY, tz_offset_s=tz_offset_s)
    if not days:
        return None
    top = max(b.max for b in days)
    day = next(b for b in days if b.max == top)
    d_lo, d_hi = max(lo, day.start), min(hi, day.start + DAY)
    hours = store.aggregate(terminal, channel, d_lo, d_hi, HOUR)
    hour = next(b for b in hours if b.max == top)
    h_lo, h_hi = max(lo, hour.start), min(hi, hour.start + HOUR)
    result = store.query(terminal, channel, h_lo, h_hi, max_points=HOUR)
    for p in result.points:
        if p.value == top:
            return top, p.ts
    return top, h_lo  # more than one sample a second: the hour is as exact as it gets


def demand(
    store: TimeSeriesStore, terminal: str, channel: str, lo: int, hi: int, *, tz_offset_s: int
) -> tuple[float, int] | None:
    """(largest 30-minute mean, start of that period)."""
    periods = store.aggregate(terminal, channel, lo, hi, DEMAND_PERIOD, tz_offset_s=tz_offset_s)
    if not periods:
        return None
    best = max(periods, key=lambda b: b.mean)
    return best.mean, best.start


def energy_from_points(points: Sequence[Point]) -> float:
    """Sum of the rises between consecutive samples; falls (resets) ignored."""
    return sum(max(0.0, b.value - a.value) for a, b in itertools.pairwise(points))


def energy_used(hours: Sequence[Bucket]) -> float:
    """Counter rise over hourly buckets, falls between hours ignored (a reset
    inside an hour cannot be told from use at this resolution)."""
    used = 0.0
    previous: Bucket | None = None
    for b in hours:
        used += b.max - b.min
        if previous is not None and b.min > previous.max:
            used += b.min - previous.max
        previous = b
    return used


def terminal_report(
    session: Session,
    store: TimeSeriesStore,
    terminal: Terminal,
    month: date,
    *,
    zone: ZoneInfo,
    now: datetime,
    sample_interval_s: int,
) -> TerminalReport:
    lo, hi = local_month_range(month, zone.key)
    covered = _covered(terminal, lo, hi, zone, now)
    start, end = covered if covered else (lo, lo)
    a, b = int(start.timestamp()), int(end.timestamp())
    utcoffset = start.astimezone(zone).utcoffset()
    offset = int(utcoffset.total_seconds()) if utcoffset is not None else 0
    leakage = power = None
    energy: list[Energy] = []
    completeness: list[Completeness] = []
    for ch in _channels(session, terminal.id, start, end) if covered else []:
        completeness.append(
            Completeness(
                ch.name, store.count(terminal.id, ch.name, a, b), (b - a) // sample_interval_s
            )
        )
        if ch.kind == "leak":
            found = peak(store, terminal.id, ch.name, a, b, tz_offset_s=offset)
            if found and (leakage is None or found[0] > leakage.value):
                leakage = Peak(ch.name, ch.unit, found[0], datetime.fromtimestamp(found[1], UTC))
        elif ch.kind == "power":
            found = demand(store, terminal.id, ch.name, a, b, tz_offset_s=offset)
            if found and (power is None or found[0] > power.value):
                power = Peak(ch.name, ch.unit, found[0], datetime.fromtimestamp(found[1], UTC))
        elif ch.kind == "energy":
            raw = store.query(terminal.id, ch.name, a, b, max_points=MAX_RAW_ENERGY)
            used = (
                energy_from_points(raw.points)
                if raw.raw
                else energy_used(store.aggregate(terminal.id, ch.name, a, b, HOUR))
            )
            energy.append(Energy(ch.name, ch.unit, used))
    alarms = session.scalars(
        sa.select(Alarm)
        .where(
            Alarm.terminal_id == terminal.id,
            Alarm.raised_at < hi,
            sa.or_(Alarm.cleared_at.is_(None), Alarm.cleared_at >= lo),
        )
        .order_by(Alarm.raised_at, Alarm.id)
    ).all()
    return TerminalReport(
        terminal.id,
        terminal.name,
        terminal.site_address,
        start,
        end,
        leakage,
        power,
        tuple(energy),
        tuple(
            AlarmLine(
                a.channel,
                a.cond,
                str(a.severity),
                str(a.state),
                a.raised_at,
                a.cleared_at,
                a.value,
                a.threshold,
            )
            for a in alarms
        ),
        tuple(completeness),
        {
            lb.channel: lb.display_name
            for lb in session.scalars(
                sa.select(ChannelLabel).where(ChannelLabel.terminal_id == terminal.id)
            )
            if lb.display_name
        },
    )


def customer_report(
    session: Session,
    store: TimeSeriesStore,
    customer: Customer,
    month: date,
    *,
    now: datetime,
    sample_interval_s: int = 60,
) -> CustomerReport:
    """The month's report of every terminal the customer has (in its zone)."""
    zone = customer.zone
    terminals = session.scalars(
        sa.select(Terminal).where(Terminal.customer_id == customer.id).order_by(Terminal.id)
    ).all()
    return CustomerReport(
        customer.id,
        customer.name,
        month.replace(day=1),
        customer.timezone,
        tuple(
            terminal_report(
                session, store, t, month, zone=zone, now=now, sample_interval_s=sample_interval_s
            )
            for t in terminals
        ),
    )
