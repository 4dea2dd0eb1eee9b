"""Lazily refreshed rollups stay invisible: queries are exact before any settle.

Both backends mark the hours a write touched and recompute their rollups
later (``settle``) or when a query needs them. These tests write through one
store that never settles by itself and query through *another* store on the
same storage, as the web process does while ingest writes.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.timeseries import Bucket, InfluxStore, Point, SqlStore, TimeSeriesStore
from cloud.timeseries.influx_wire import InfluxClient
from tests.support import influx, postgres
from tests.support.head import upgrade_to_head

pytestmark = pytest.mark.integration

BASE = int(datetime(2025, 6, 1, 22, 41, tzinfo=UTC).timestamp())  # deliberately unaligned
MINUTE, HOUR, DAY = 60, 3600, 86400
NEVER = 10**9  # settle_s of a writer that leaves every refresh to the readers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sql-sqlite", "sql-postgresql", "influx"])
def open_store(request, tmp_path) -> Iterator[Callable[..., TimeSeriesStore]]:
    """Opens stores of one backend, all on the same (fresh) storage."""
    engines: list[sa.Engine] = []
    url = None
    database = None
    if request.param == "sql-sqlite":
        url = f"sqlite:///{tmp_path / 'ts.sqlite3'}"
    elif request.param == "sql-postgresql":
        url = postgres.session_server(request.config).create_database("lazy")
    if url is not None:
        upgrade_to_head(url)
    else:
        database = influx.session_server(request.config).store("lazy").database

    def make(**kw: object) -> TimeSeriesStore:
        if database is not None:
            client = InfluxClient(influx.session_server(request.config).url)
            request.addfinalizer(client.close)
            return InfluxStore(client, database, **kw)  # type: ignore[arg-type]
        assert url is not None
        engine = db.make_engine(url)
        engines.append(engine)
        return SqlStore(engine, **kw)  # type: ignore[arg-type]

    yield make
    for engine in engines:
        engine.dispose()


def minutely(channel: str, n: int, seed: int) -> list[Point]:
    rng = random.Random(seed)
    return [
        Point("T1", channel, BASE + i * MINUTE, round(rng.uniform(-5, 50), 3)) for i in range(n)
    ]


def brute(points: Iterable[Point], lo: int, hi: int, width: int) -> list[Bucket]:
    groups: dict[int, list[float]] = defaultdict(list)
    for p in points:
        if lo <= p.ts < hi:
            groups[p.ts // width * width].append(p.value)
    return [
        Bucket(b, min(v), max(v), math.fsum(v) / len(v), len(v)) for b, v in sorted(groups.items())
    ]


def assert_exact(store: TimeSeriesStore, channel: str, points: Iterable[Point]) -> None:
    latest = {p.ts: p for p in points}
    lo, hi = BASE - DAY, BASE + 4 * DAY
    assert store.count("T1", channel, lo, hi) == len(latest)
    for width in (HOUR, DAY):
        got = store.aggregate("T1", channel, lo, hi, width)
        want = brute(latest.values(), lo, hi, width)
        assert [(b.start, b.count, b.min, b.max) for b in got] == [
            (b.start, b.count, b.min, b.max) for b in want
        ]
        for g, w in zip(got, want, strict=True):
            assert math.isclose(g.mean, w.mean, rel_tol=1e-9, abs_tol=1e-9), (g, w)


def dirty_marks(store: TimeSeriesStore) -> int:
    """How many hours the storage holds marked for a rollup refresh."""
    if isinstance(store, SqlStore):
        with store.engine.connect() as conn:
            return int(
                conn.exec_driver_sql("SELECT count(*) FROM ts_rollups WHERE width < 0").scalar_one()
            )
    assert isinstance(store, InfluxStore)
    (res,) = store.client.query(store.database, ['SELECT count("n") FROM "rollup_dirty"'])
    series = res.get("series", [])
    return int(series[0]["values"][0][1]) if series else 0


def test_another_store_reads_exact_rollups_before_the_writer_settles(open_store):
    writer = open_store(settle_s=NEVER)
    reader = open_store()
    first = minutely("ior", 2 * 1440, seed=1)
    writer.write(first)
    assert dirty_marks(reader) > 0
    assert_exact(reader, "ior", first)
    # Rewrites after the reader refreshed: marked again, still exact.
    second = minutely("ior", 2 * 1440, seed=7)[300:900]
    writer.write(second)
    assert_exact(reader, "ior", first + second)


def test_the_writer_settles_once_its_interval_has_passed(open_store):
    clock = FakeClock()
    writer = open_store(settle_s=5.0, clock=clock)
    points = minutely("kw", 600, seed=3)
    writer.write(points[:300])
    assert dirty_marks(writer) > 0  # within the interval: left for later
    clock.now += 5.0
    writer.write(points[300:])
    assert dirty_marks(writer) == 0
    assert_exact(open_store(), "kw", points)


def test_settle_refreshes_every_hour_the_store_wrote(open_store):
    writer = open_store(settle_s=NEVER)
    points = minutely("t", 3 * 1440, seed=5)
    writer.write(points)
    writer.settle()
    assert dirty_marks(writer) == 0
    assert_exact(open_store(), "t", points)
