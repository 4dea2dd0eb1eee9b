"""Time-series backends against real storage: SQL on SQLite and PostgreSQL, and InfluxDB.

Every test runs on all three; results are compared with a brute-force
computation over the points the test wrote.
"""

from __future__ import annotations

import io
import itertools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest

from cloud import db
from cloud.errors import InvalidValue, TimeseriesError
from cloud.ingest.service import STORED, Inbound, IngestService
from cloud.models import FrameReceipt
from cloud.timeseries import Bucket, InfluxStore, Point, SqlStore, TimeSeriesStore
from cloud.timeseries.influx_wire import InfluxClient
from tests.support import influx, postgres
from tests.support import ingest as S
from tests.support.head import upgrade_to_head

pytestmark = pytest.mark.integration

BASE = int(datetime(2025, 3, 30, 21, 17, tzinfo=UTC).timestamp())  # deliberately unaligned
MINUTE, HOUR, DAY = 60, 3600, 86400

StoreFactory = Callable[[], TimeSeriesStore]


@pytest.fixture(params=["sql-sqlite", "sql-postgresql", "influx"])
def new_store(request, tmp_path) -> Iterable[StoreFactory]:
    """Factory of fresh, empty, prepared stores of one backend."""
    engines = []
    counter = itertools.count()

    def make() -> TimeSeriesStore:
        if request.param == "influx":
            store = influx.session_server(request.config).store()
            request.addfinalizer(store.client.close)
            return store
        if request.param == "sql-sqlite":
            url = f"sqlite:///{tmp_path / f'ts{next(counter)}.sqlite3'}"
        else:
            url = postgres.session_server(request.config).create_database("ts")
        upgrade_to_head(url)
        engine = db.make_engine(url)
        engines.append(engine)
        store = SqlStore(engine)
        store.prepare()
        return store

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def store(new_store) -> TimeSeriesStore:
    return new_store()


def minutely(terminal: str, channel: str, n: int, seed: int = 1, start: int = BASE) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point(terminal, channel, start + i * MINUTE, round(rng.uniform(-5, 50), 3))
        for i in range(n)
    ]


def irregular(terminal: str, channel: str, span: int, seed: int) -> list[Point]:
    rng = random.Random(seed)
    ts, out = BASE, []
    while ts < BASE + span:
        out.append(Point(terminal, channel, ts, rng.gauss(10, 3), rng.choice([0, 0, 1])))
        ts += rng.choice([1, 7, 59, 60, 61, 300, 3599, 5000])
    return out


def brute(
    points: Iterable[Point], lo: int, hi: int, width: int, tz_offset_s: int = 0
) -> list[Bucket]:
    """Buckets computed the obvious way; local midnight at ``tz_offset_s`` is a boundary."""
    groups: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if lo <= p.ts < hi:
            groups[(p.ts + tz_offset_s) // width * width - tz_offset_s].append(p.value)
    return [
        Bucket(b, min(v), max(v), math.fsum(v) / len(v), len(v)) for b, v in sorted(groups.items())
    ]


def assert_buckets(got: list[Bucket] | tuple[Bucket, ...], want: list[Bucket]) -> None:
    assert [(b.start, b.count, b.min, b.max) for b in got] == [
        (b.start, b.count, b.min, b.max) for b in want
    ]
    for g, w in zip(got, want, strict=True):
        assert math.isclose(g.mean, w.mean, rel_tol=1e-9, abs_tol=1e-9), (g, w)


# -- idempotency -----------------------------------------------------------------


def test_writing_the_same_batch_twice_changes_nothing(store):
    batch = minutely("T1", "ior", 3 * 1440) + minutely("T1", "io", 500, seed=2)
    assert store.write(batch) == len(batch)
    end = BASE + 4 * DAY

    def snapshot():
        return (
            store.count("T1", "ior", BASE, end),
            store.count("T1", "io", BASE, end),
            store.aggregate("T1", "ior", BASE, end, HOUR),
            store.aggregate("T1", "ior", BASE, end, DAY),
            store.latest("T1"),
        )

    before = snapshot()
    assert before[:2] == (3 * 1440, 500)
    store.write(batch)
    store.write(reversed(batch))
    assert snapshot() == before


def test_a_rewrite_replaces_the_value_and_rollups_do_not_double_count(store):
    first = minutely("T1", "ior", 2 * 1440, seed=1)
    store.write(first)
    second = minutely("T1", "ior", 2 * 1440, seed=99)  # same timestamps, new values
    store.write(second[100:700])
    now = {p.ts: p for p in first} | {p.ts: p for p in second[100:700]}
    end = BASE + 3 * DAY
    assert store.count("T1", "ior", BASE, end) == 2 * 1440
    for width in (HOUR, DAY, 2 * DAY):
        assert_buckets(
            store.aggregate("T1", "ior", BASE, end, width), brute(now.values(), BASE, end, width)
        )
    # Within one batch the last write wins too.
    dup = [Point("T1", "kw", BASE, 1.0), Point("T1", "kw", BASE, 2.0)]
    assert store.write(dup) == 1
    assert store.latest("T1")["kw"].value == 2.0


# -- raw versus aggregated --------------------------------------------------------


def test_short_ranges_come_back_raw_long_ones_aggregated(store):
    points = minutely("T1", "ior", 3 * 1440)
    store.write(points)
    short = store.query("T1", "ior", BASE + 10, BASE + 10 * HOUR, max_points=1000)
    assert short.raw and short.width is None and not short.buckets
    assert list(short.points) == [p for p in points if BASE + 10 <= p.ts < BASE + 10 * HOUR]

    long = store.query("T1", "ior", BASE, BASE + 3 * DAY, max_points=1000)
    assert not long.raw and not long.points
    assert long.width == 300 and len(long.buckets) <= 1000
    assert_buckets(long.buckets, brute(points, BASE, BASE + 3 * DAY, 300))
    assert sum(b.count for b in long.buckets) == len(points)


def test_the_switch_is_exactly_at_max_points(store):
    store.write(minutely("T1", "ior", 100))
    end = BASE + 100 * MINUTE
    assert store.query("T1", "ior", BASE, end, max_points=100).raw
    over = store.query("T1", "ior", BASE, end, max_points=99)
    assert not over.raw and len(over.buckets) <= 99


def test_unknown_series_and_empty_ranges(store):
    store.write(minutely("T1", "ior", 10))
    assert store.query("T1", "nope", BASE, BASE + DAY).points == ()
    assert store.query("T1", "ior", BASE - DAY, BASE).points == ()
    assert store.latest("T9") == {}
    assert store.count("T9", "x", BASE, BASE + DAY) == 0
    with pytest.raises(InvalidValue):
        store.query("T1", "ior", BASE, BASE)
    with pytest.raises(InvalidValue):
        store.query("T1", "ior", BASE, BASE + 1, max_points=0)


# -- aggregate correctness ----------------------------------------------------------


def test_aggregates_match_brute_force_for_ragged_ranges_and_every_tier(store):
    points = irregular("T1", "ior", 9 * DAY, seed=7) + irregular("T1", "t", 2 * DAY, seed=8)
    store.write(points)
    ior = [p for p in points if p.channel == "ior"]
    rng = random.Random(3)
    widths = [1, 60, 300, 1800, HOUR, 3 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY]
    for width in widths:
        lo = BASE + rng.randrange(0, 2 * DAY)
        hi = lo + rng.randrange(1, 7 * DAY) if width > 60 else lo + rng.randrange(1, 6 * HOUR)
        assert_buckets(store.aggregate("T1", "ior", lo, hi, width), brute(ior, lo, hi, width))
    everything = (BASE - DAY, BASE + 10 * DAY)
    assert store.count("T1", "ior", *everything) == len(ior)
    assert store.count("T1", "t", *everything) == len(points) - len(ior)


@pytest.mark.parametrize(("tz", "hours"), [(9 * HOUR, 9), (-5 * HOUR, 19), (19800, 5.5)])
def test_buckets_can_follow_local_midnight(store, tz, hours):
    # JST (no DST), New York winter time, India (+5:30: no rollup tier fits).
    points = irregular("T1", "kwh", 9 * DAY, seed=21)
    store.write(points)
    lo, hi = BASE + 5 * HOUR + 11, BASE + 8 * DAY + 7
    for width in (300, HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY):
        got = store.aggregate("T1", "kwh", lo, hi, width, tz_offset_s=tz)
        assert_buckets(got, brute(points, lo, hi, width, tz))
    days = store.aggregate("T1", "kwh", lo, hi, DAY, tz_offset_s=tz)
    assert all((b.start + tz) % DAY == 0 for b in days[1:])  # local midnights
    assert days[1].start % DAY == (DAY - hours * HOUR) % DAY
    q = store.query("T1", "kwh", lo, hi, max_points=20, tz_offset_s=tz)
    assert not q.raw and len(q.buckets) <= 20
    assert_buckets(q.buckets, brute(points, lo, hi, q.width or 0, tz))


# -- retention --------------------------------------------------------------------


def test_delete_before_drops_old_samples_and_keeps_rollups_exact(store):
    points = minutely("T1", "ior", 4 * 1440) + minutely("T2", "kw", 4 * 1440, seed=5)
    store.write(points)
    latest = store.latest("T1")
    cutoff = BASE + 36 * HOUR + 17 * MINUTE + 5  # mid-hour, mid-day
    store.delete_before(cutoff)
    left = [p for p in points if p.ts >= cutoff]
    end = BASE + 5 * DAY
    assert store.count("T1", "ior", 0, end) + store.count("T2", "kw", 0, end) == len(left)
    for terminal, channel in (("T1", "ior"), ("T2", "kw")):
        mine = [p for p in left if p.terminal == terminal]
        for width in (HOUR, DAY, 2 * DAY):
            assert_buckets(
                store.aggregate(terminal, channel, 0, end, width), brute(mine, 0, end, width)
            )
    assert store.latest("T1") == latest
    store.delete_before(BASE + 3 * DAY - (BASE + 3 * DAY) % DAY)  # day-aligned cutoff
    assert store.count("T1", "ior", 0, end) == len(
        [p for p in left if p.terminal == "T1" and p.ts >= BASE + 3 * DAY - (BASE + 3 * DAY) % DAY]
    )


# -- backups ----------------------------------------------------------------------


def test_export_then_import_into_an_empty_store_round_trips(store, new_store):
    points = (
        irregular("T1", "ior", 2 * DAY, seed=11)
        + minutely("T2", "温度", 300, seed=12)
        + [Point("T3", "odd, name=\"x\" 'y'", BASE, 1.5, 3, historical=True)]
    )
    store.write(points)
    buf = io.BytesIO()
    assert store.export(buf) == len(points)
    copy = new_store()
    buf.seek(0)
    assert copy.import_(buf) == len(points)
    assert list(copy.iter_points()) == list(store.iter_points())
    assert sorted(copy.iter_points(), key=lambda p: p.key) == sorted(points, key=lambda p: p.key)
    end = BASE + 3 * DAY
    assert copy.aggregate("T1", "ior", BASE, end, DAY) == store.aggregate(
        "T1", "ior", BASE, end, DAY
    )
    buf.seek(0)
    copy.import_(buf)  # an interrupted import can simply be run again
    assert (
        copy.series()
        == store.series()
        == [("T1", "ior"), ("T2", "温度"), ("T3", points[-1].channel)]
    )
    assert copy.count("T1", "ior", 0, end) == store.count("T1", "ior", 0, end)


def test_latest_per_channel_keeps_quality_and_historical_flag(store):
    store.write(
        [
            Point("T1", "ior", BASE, 1.0),
            Point("T1", "ior", BASE + 60, 2.0, quality=4),
            Point("T1", "t", BASE + 30, 20.5, historical=True),
            Point("T2", "ior", BASE + 999, 9.0),
        ]
    )
    assert store.latest("T1") == {
        "ior": Point("T1", "ior", BASE + 60, 2.0, quality=4),
        "t": Point("T1", "t", BASE + 30, 20.5, historical=True),
    }


def test_latest_of_many_terminals_in_one_call(store):
    store.write(
        [
            Point("T1", "ior", BASE, 1.0),
            Point("T1", "ior", BASE + 60, 2.0),
            Point("T2", "kw", BASE + 5, 7.5),
            Point("T3", "ior", BASE, 3.0),  # not asked for
        ]
    )
    assert store.latest_many(["T1", "T2", "T9"]) == {
        "T1": {"ior": Point("T1", "ior", BASE + 60, 2.0)},
        "T2": {"kw": Point("T2", "kw", BASE + 5, 7.5)},
    }
    assert store.latest_many([]) == {}


# -- backend specifics ----------------------------------------------------------------


def test_backup_moves_a_site_from_sql_to_influxdb(tmp_path, request):
    url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    sql = SqlStore(engine)
    points = minutely("T1", "ior", 2000)
    sql.write(points)
    buf = io.BytesIO()
    sql.export(buf)
    engine.dispose()
    target = influx.session_server(request.config).store("moved")
    buf.seek(0)
    target.import_(buf)
    assert list(target.iter_points()) == points
    q = target.query("T1", "ior", BASE, BASE + 2 * DAY, max_points=200)
    assert_buckets(q.buckets, brute(points, BASE, BASE + 2 * DAY, q.width or 0))
    target.client.close()


def test_sql_store_on_an_unmigrated_database_says_so(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    with pytest.raises(TimeseriesError, match=r"run cloud\.db\.upgrade"):
        SqlStore(engine).prepare()
    engine.dispose()


def test_unreachable_influxdb_is_a_timeseries_error():
    store = InfluxStore(InfluxClient(f"http://127.0.0.1:{postgres.free_port()}", timeout=2), "x")
    with pytest.raises(TimeseriesError, match="unreachable"):
        store.write([Point("T1", "ior", BASE, 1.0)])


def test_a_started_write_is_stored_once_waited_for(store):
    points = minutely("T1", "io", 90)
    wait = store.start_write(points + points[:10])  # repeats count once
    assert wait() == 90
    assert [p.value for p in store.raw("T1", "io", BASE, BASE + DAY, 1000)] == [
        p.value for p in points
    ]
    # The store is free again: a plain write and a query work at once.
    store.write(minutely("T1", "ior", 5))
    assert store.count("T1", "ior", BASE, BASE + DAY) == 5


def test_influxdb_refusing_a_started_write_raises_when_waited_for(request):
    server = influx.session_server(request.config)
    store = InfluxStore(InfluxClient(server.url), "never_created")
    wait = store.start_write(minutely("T1", "io", 3))
    with pytest.raises(TimeseriesError, match="database not found"):
        wait()
    store.client.close()


def test_ingest_commits_nothing_when_influxdb_refuses_the_samples(request, tmp_path):
    """The batch's transaction waits for InfluxDB's answer before committing:
    refused samples leave no receipt, so the broker's redelivery stores them."""
    url = S.migrated_sqlite(tmp_path, tmp_path)
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        S.seed(s, ["T1"])
    server = influx.session_server(request.config)
    term = S.Terminal("T1")
    batch = [Inbound.of_frame(f, S.at(S.T0 + 30)) for f in (term.birth(), term.data())]

    refused = IngestService(sessions, InfluxStore(InfluxClient(server.url), "never_created"))
    with pytest.raises(TimeseriesError):
        refused.process(batch)
    with sessions() as s:
        assert s.query(FrameReceipt).count() == 0

    store = server.store()
    result = IngestService(sessions, store).process(batch)
    assert [o.status for o in result.outcomes] == [STORED, STORED]
    assert store.count_raw() == len(S.CHANNELS)
    engine.dispose()


def test_influxdb_reads_samples_of_the_three_field_layout(request):
    """Samples stored before quality and the historical flag shared one field
    read back as they were written, and a rewrite in the new layout wins."""
    store = influx.session_server(request.config).store()
    old = [
        "samples,channel=ior,terminal=T1 value=1.5,quality=2i,historical=true 1000",
        "samples,channel=ior,terminal=T1 value=2.5,quality=0i,historical=false 1060",
    ]
    store.client.write(store.database, old)
    assert store.raw("T1", "ior", 0, 2000, 10) == [
        Point("T1", "ior", 1000, 1.5, 2, historical=True),
        Point("T1", "ior", 1060, 2.5),
    ]
    store.write([Point("T1", "ior", 1000, 1.5)])  # good quality, live, this time
    assert store.latest("T1") == {"ior": Point("T1", "ior", 1060, 2.5)}
    assert store.raw("T1", "ior", 0, 2000, 10)[0] == Point("T1", "ior", 1000, 1.5)
    store.client.close()
