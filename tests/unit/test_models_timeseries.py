"""Time-series value types, query planning, line protocol and backup format (no server)."""

from __future__ import annotations

import io
import itertools
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.errors import BackupFormatError, InvalidValue
from cloud.timeseries import Point
from cloud.timeseries.backup import dump, load
from cloud.timeseries.influx import _lines_and_hours, line
from cloud.timeseries.influx_wire import escape_tag, quote_ident, quote_str
from cloud.timeseries.planning import (
    DAY,
    HOUR,
    LADDER,
    RAW,
    bucket_count,
    bucket_offset,
    choose_width,
    merge,
    plan,
    runs,
)

JST = timezone(timedelta(hours=9))


def test_point_accepts_aware_datetimes_and_epoch_seconds_alike():
    a = Point("T1", "ior", datetime(2025, 1, 1, 9, 0, 0, 900_000, tzinfo=JST), 1)
    b = Point("T1", "ior", 1735689600.4, 1.0)
    assert a.ts == b.ts == 1735689600  # sub-second parts are floored
    assert a.value == 1.0 and isinstance(a.value, float)
    assert a.time == datetime(2025, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ts": datetime(2025, 1, 1)},  # naive on purpose
        {"ts": 1_735_689_600_000},  # milliseconds, not seconds
        {"ts": -1},
        {"ts": float("nan")},
        {"ts": True},
        {"value": float("inf")},
        {"value": "high"},
        {"quality": -1},
        {"terminal": ""},
        {"terminal": "x" * 33},
        {"channel": "a\nb"},
        {"channel": "é" * 33},  # 66 UTF-8 bytes
    ],
)
def test_point_refuses_what_a_backend_could_not_store(kwargs):
    args = {"terminal": "T1", "channel": "ior", "ts": 0, "value": 1.0} | kwargs
    with pytest.raises(InvalidValue):
        Point(**args)


# -- planning -----------------------------------------------------------------

ranges = st.tuples(st.integers(0, 400 * DAY), st.integers(1, 400 * DAY)).map(
    lambda t: (t[0], t[0] + t[1])
)
widths = st.sampled_from([*LADDER, 4 * HOUR, 14 * DAY])
tz_offsets = st.sampled_from([0, 9 * HOUR, -5 * HOUR, 19800, 20700, -12 * HOUR])


@given(ranges, widths, tz_offsets)
def test_plan_covers_the_range_exactly_with_pieces_each_tier_can_answer(rng, width, tz):
    start, end = rng
    offset = bucket_offset(width, tz)
    pieces = plan(start, end, width, offset)
    assert pieces[0][1] == start and pieces[-1][2] == end
    for (_, _, hi), (_, lo, _) in itertools.pairwise(pieces):
        assert hi == lo  # contiguous, no overlap
    for tier, lo, hi in pieces:
        assert lo < hi
        if tier != RAW:
            assert width % tier == 0 and lo % tier == 0 and hi % tier == 0
            # no rollup bucket straddles a query bucket boundary
            assert (lo - offset) // width == (lo + tier - 1 - offset) // width


def test_bucket_offset_puts_local_midnight_on_a_boundary():
    assert bucket_offset(DAY, 9 * HOUR) == 15 * HOUR  # JST midnight is 15:00 UTC
    assert bucket_offset(HOUR, 9 * HOUR) == 0
    assert bucket_offset(HOUR, 19800) == 1800  # India: half-hour boundaries
    assert {t for t, _, _ in plan(0, 10 * DAY, DAY, bucket_offset(DAY, 9 * HOUR))} == {HOUR}


def test_plan_reads_raw_only_at_the_ragged_ends():
    start, end = 1_700_000_123, 1_700_000_123 + 365 * DAY
    pieces = plan(start, end, 12 * HOUR)
    raw = sum(hi - lo for tier, lo, hi in pieces if tier == RAW)
    assert raw < 2 * HOUR
    assert [t for t, _, _ in pieces] == [RAW, HOUR, RAW]  # 12 h: days do not divide it
    assert [t for t, _, _ in plan(start, end, 2 * DAY)] == [RAW, HOUR, DAY, HOUR, RAW]
    assert {t for t, _, _ in plan(start, end, 300)} == {RAW}  # 5 min: no rollup fits


@given(ranges, st.integers(1, 5000), tz_offsets)
def test_choose_width_gives_at_most_max_points_buckets(rng, max_points, tz):
    start, end = rng
    width = choose_width(start, end, max_points, tz)
    count = bucket_count(start, end, width, bucket_offset(width, tz))
    epoch_corner = max_points == 1 and tz < 0 and start < -tz < end
    assert count <= (2 if epoch_corner else max_points)
    smaller = [w for w in LADDER if w < width]
    if smaller and width in LADDER:  # and the next smaller ladder width would not fit
        w = smaller[-1]
        assert bucket_count(start, end, w, bucket_offset(w, tz)) > max_points


def test_merge_combines_partials_of_the_same_bucket():
    buckets = merge([(0, 1.0, 5.0, 6.0, 2), (60, 2.0, 2.0, 2.0, 1), (0, -1.0, 3.0, 2.0, 2)])
    assert [(b.start, b.min, b.max, b.mean, b.count) for b in buckets] == [
        (0, -1.0, 5.0, 2.0, 4),
        (60, 2.0, 2.0, 2.0, 1),
    ]


def test_runs_merges_adjacent_buckets():
    assert runs([7200, 0, 3600, 36000, 3600], HOUR) == [(0, 10800), (36000, 39600)]


# -- InfluxDB line protocol and InfluxQL ---------------------------------------


def test_line_protocol_escapes_tags_and_types_fields():
    p = Point("T 1,x=y", "kw\\h", 1735689600, 2.0, 3, historical=True)
    assert line(p) == (
        "samples,channel=kw\\\\h,terminal=T\\ 1\\,x\\=y value=2.0,flags=7i 1735689600"
    )
    assert escape_tag("a b") == "a\\ b"


def test_the_batch_formatter_writes_what_line_writes():
    points = [
        Point("T 1,x=y", "kw\\h", 1735689600, 2.0, 3, historical=True),
        Point("T1", "io", 1735693199, -0.0),
        Point("T1", "io", 1735693200, 1e-7, 2**31 - 1),
        Point("T2", "v", 7, 123456789012345678, 1),  # an int value becomes a float
        Point("T2", "v", 8, -1.5e300),
    ]
    lines, hours = _lines_and_hours(points)
    assert lines == [line(p) for p in points]
    assert hours == {("T 1,x=y", 1735689600), ("T1", 1735689600), ("T1", 1735693200), ("T2", 0)}


def test_influxql_quoting_cannot_be_broken_out_of():
    assert quote_str("it's") == "'it\\'s'"
    assert quote_str("a\\'") == "'a\\\\\\''"
    assert quote_ident('x"; DROP') == '"x\\"; DROP"'


# -- backup format ---------------------------------------------------------------


def test_backup_round_trip_is_bit_exact():
    points = [
        Point("T1", "ior", 1, 0.1 + 0.2, 0, False),
        Point("T1", "温度", 2, -1e-300, 7, True),
        Point("T2", "kw", 3, 123456789.123456789, 0, False),
    ]
    buf = io.BytesIO()
    assert dump(points, buf) == 3
    buf.seek(0)
    assert list(load(buf)) == points


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"", "not JSON"),
        (b'{"format": "other", "version": 1}\n', "bad header"),
        (b'{"format": "mimamori-timeseries", "version": 2}\n', "version 2"),
        (b'{"format": "mimamori-timeseries", "version": 1}\n{"t": "T1"}\n', "line 2"),
        (
            b'{"format": "mimamori-timeseries", "version": 1}\n'
            b'{"t": "T1", "c": "x", "ts": 1, "v": 1.0, "q": 0, "h": "false"}\n',
            "mistyped",
        ),
        (
            b'{"format": "mimamori-timeseries", "version": 1}\n'
            b'{"t": "T1", "c": "x", "ts": 1, "v": 1.0, "q": 0, "h": false}\n[1]\n',
            "line 3: not a JSON object",
        ),
    ],
)
def test_foreign_or_damaged_backups_are_refused_with_the_line(text, match):
    with pytest.raises(BackupFormatError, match=match):
        list(load(io.BytesIO(text)))


def test_backup_header_is_self_describing():
    buf = io.BytesIO()
    dump([], buf)
    assert json.loads(buf.getvalue()) == {"format": "mimamori-timeseries", "version": 1}
