"""Graph data and CSV export of one terminal's channels.

Graph requests ask the store for at most ``max_points`` values: raw samples
for short ranges, min/mean/max buckets (from the hour/day rollups) for long
ones, so a year of one-minute data stays a few hundred rows on the wire.
Buckets are aligned to the customer's local midnight.

CSV files are raw samples, streamed day by day, with the time zone in the
header (``time (JST, UTC+09:00)``) and UTF-8 with a byte-order mark so
spreadsheet programs in Japan open them correctly.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.errors import InvalidValue
from cloud.models import Alarm, AlarmCondition, Channel
from cloud.services.errors import N_, Invalid
from cloud.services.labels import Label
from cloud.timeseries import TimeSeriesStore

DAY = 86400
# Rules whose levels are values of the channel (drawn as lines).
LEVEL_CONDS = ("hi", "lo", "leak")
# Alarms marked on one graph at most (a flapping channel would hide the line).
MAX_ALARM_MARKS = 200
# A day of one channel at one sample per second; a day chunk is always raw.
_RAW_PER_DAY = DAY + 1


def zone_offset_s(zone: ZoneInfo, at: datetime) -> int:
    offset = at.astimezone(zone).utcoffset()
    return int(offset.total_seconds()) if offset else 0


def graph_data(
    store: TimeSeriesStore,
    terminal_id: str,
    channel: Channel,
    start: int,
    end: int,
    *,
    max_points: int,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """JSON-ready columns for uPlot: ``t`` (epoch s) and ``min``/``mean``/``max``
    (equal for raw samples). Raises :class:`Invalid` for a bad range."""
    if end <= start:
        raise Invalid(N_("The range ends before it starts."))
    try:
        result = store.query(
            terminal_id,
            channel.name,
            start,
            end,
            max_points,
            tz_offset_s=zone_offset_s(zone, datetime.fromtimestamp(end, UTC)),
        )
    except InvalidValue as err:
        raise Invalid(N_("Invalid value: %(reason)s"), reason=str(err)) from err
    late: list[int] = []
    if result.raw:
        t = [p.ts for p in result.points]
        v = [p.value for p in result.points]
        lo = mean = hi = v
        late = [p.ts for p in result.points if p.historical]
    else:
        t = [b.start for b in result.buckets]
        lo = [b.min for b in result.buckets]
        mean = [round(b.mean, 6) for b in result.buckets]
        hi = [b.max for b in result.buckets]
    return {
        "channel": channel.name,
        "unit": channel.unit,
        "kind": channel.kind,
        "start": start,
        "end": end,
        "raw": result.raw,
        "width": result.width,
        "t": t,
        "min": lo,
        "mean": mean,
        "max": hi,
        "late": late,
    }


def graph_marks(
    session: Session, terminal_id: str, channel: str, start: int, end: int, *, now: datetime
) -> dict[str, Any]:
    """What a graph of ``channel`` draws besides the values: the warning and
    alarm ``levels`` in force at ``now`` (temporary overrides included) of
    its enabled level rules, and the ``alarms`` of the channel that were
    open at some time in ``[start, end)`` (epoch seconds; ``cleared`` null
    while open)."""
    levels = []
    rules = session.scalars(
        sa.select(AlarmCondition).where(
            AlarmCondition.terminal_id == terminal_id,
            AlarmCondition.channel == channel,
            AlarmCondition.enabled.is_(True),
            AlarmCondition.cond.in_(LEVEL_CONDS),
        )
    )
    for rule in rules:
        warn, alarm = rule.levels(now)
        for severity, value in (("warning", warn), ("alarm", alarm)):
            if value is not None:
                levels.append({"cond": rule.cond, "severity": severity, "value": value})
    lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    rows = session.scalars(
        sa.select(Alarm)
        .where(
            Alarm.terminal_id == terminal_id,
            Alarm.channel == channel,
            Alarm.raised_at < hi,
            sa.or_(Alarm.cleared_at.is_(None), Alarm.cleared_at >= lo),
        )
        .order_by(Alarm.raised_at)
        .limit(MAX_ALARM_MARKS)
    )
    alarms = [
        {
            "id": a.id,
            "cond": a.cond,
            "severity": str(a.severity),
            "raised": int(a.raised_at.timestamp()),
            "cleared": int(a.cleared_at.timestamp()) if a.cleared_at else None,
            "historical": bool(a.historical),
        }
        for a in rows
    ]
    return {"levels": levels, "alarms": alarms}


def zone_label(zone: ZoneInfo, start: datetime, end: datetime) -> tuple[str, bool]:
    """Header text for the time column, and whether rows need their own offset
    (only when the zone changes offset within the range, e.g. DST)."""
    a, b = start.astimezone(zone), end.astimezone(zone)
    if a.utcoffset() == b.utcoffset():
        return f"time ({a.tzname()}, UTC{_offset(a)})", False
    return f"time ({zone.key}, offset per row)", True


def _offset(local: datetime) -> str:
    text = local.strftime("%z")  # +0900
    return f"{text[:3]}:{text[3:]}"


def csv_rows(
    store: TimeSeriesStore,
    terminal_id: str,
    channels: list[Channel],
    *,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    max_days: int,
    names: Mapping[str, Label] | None = None,
) -> Iterator[str]:
    """CSV text chunks of raw samples of ``channels`` in ``[start, end)``,
    one row per timestamp (empty cells where a channel has no sample).
    With ``names`` (the channels' labels), columns are headed with the
    display names and labelled contacts read as their state names.

    Raises :class:`Invalid` (before yielding anything) for an empty range,
    one longer than ``max_days`` or no channels.
    """
    if end <= start:
        raise Invalid(N_("The range ends before it starts."))
    if end - start > timedelta(days=max_days):
        raise Invalid(N_("A CSV file covers at most %(n)s days."), n=max_days)
    if not channels:
        raise Invalid(N_("No channel to export."))
    return _generate(
        store, terminal_id, channels, start=start, end=end, zone=zone, names=names or {}
    )


def _generate(
    store: TimeSeriesStore,
    terminal_id: str,
    channels: list[Channel],
    *,
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    names: Mapping[str, Label],
) -> Iterator[str]:
    label, per_row_offset = zone_label(zone, start, end)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([label] + [_heading(c, names.get(c.name)) for c in channels])
    cells = [_cell(names.get(c.name)) for c in channels]
    yield "\ufeff" + _take(buf)
    lo, hi = int(start.timestamp()), int(end.timestamp())
    for chunk_lo in range(lo, hi, DAY):
        chunk_hi = min(hi, chunk_lo + DAY)
        rows: dict[int, list[str]] = {}
        for i, ch in enumerate(channels):
            result = store.query(terminal_id, ch.name, chunk_lo, chunk_hi, _RAW_PER_DAY)
            for p in result.points:
                rows.setdefault(p.ts, [""] * len(channels))[i] = cells[i](p.value)
        for ts in sorted(rows):
            local = datetime.fromtimestamp(ts, UTC).astimezone(zone)
            stamp = local.strftime("%Y-%m-%d %H:%M:%S")
            if per_row_offset:
                stamp += _offset(local)
            writer.writerow([stamp, *rows[ts]])
        if rows:
            yield _take(buf)


def _number(value: float) -> str:
    return f"{value:.10g}"


def _heading(channel: Channel, lb: Label | None) -> str:
    """``受電電力 (pm1.kw) [kW]``; the wire name alone when unlabelled."""
    name = f"{lb.display_name} ({channel.name})" if lb and lb.display_name else channel.name
    return f"{name} [{channel.unit}]" if channel.unit else name


def _cell(lb: Label | None) -> Callable[[float], str]:
    """How a column writes a value: the state name of a labelled contact, else the number."""
    if lb is None or not lb.is_contact or not (lb.state_off or lb.state_on):
        return _number
    return lambda v: lb.state(v) or _number(v)


def _take(buf: io.StringIO) -> str:
    text = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return text
