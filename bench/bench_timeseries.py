"""Benchmark: a year of one-minute data for one channel, queried like a graph would.

For each backend (SQL on SQLite, SQL on PostgreSQL, InfluxDB) the script
writes 525,600 points in batches, then times ``query()`` over the last 12
hours, day, week, month and year with ``max_points=1000`` and buckets aligned
to JST midnight (what a chart for a Japanese customer asks for), and, next to
it, InfluxDB's own aggregation of the raw data (``SELECT min, mean, max ...
GROUP BY time``) at the same bucket width without our rollups.

It starts its own PostgreSQL and InfluxDB (like the tests) unless URLs are
given. Figures, not pass/fail: prints a Markdown table and, with ``--json``,
writes the numbers to a file.

    .venv/bin/python bench/bench_timeseries.py --json build/bench/timeseries.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tests.support lives here

from cloud import db  # noqa: E402
from cloud.timeseries import InfluxStore, Point, SqlStore, TimeSeriesStore  # noqa: E402
from cloud.timeseries.influx_wire import InfluxClient, quote_str  # noqa: E402
from cloud.timeseries.planning import bucket_offset, choose_width  # noqa: E402
from tests.support.influx import InfluxServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

START = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
MINUTE, DAY = 60, 86400
TERMINAL, CHANNEL = "BENCH0001", "kw"
RANGES = {"12 h": DAY // 2, "day": DAY, "week": 7 * DAY, "month": 30 * DAY, "year": 365 * DAY}


def year_of_minutes(n: int) -> Iterator[Point]:
    """A plausible load profile: daily and weekly cycles plus a slow trend."""
    for i in range(n):
        ts = START + i * MINUTE
        day = 2 * math.pi * (ts % DAY) / DAY
        week = 2 * math.pi * (ts % (7 * DAY)) / (7 * DAY)
        value = 120 + 60 * math.sin(day - 2) + 15 * math.sin(week) + (i % 97) * 0.1
        yield Point(TERMINAL, CHANNEL, ts, round(value, 2))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time in ms over ``repeat`` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def load(store: TimeSeriesStore, n: int, batch: int) -> float:
    """Write ``n`` points in batches; return points per second."""
    t0 = time.perf_counter()
    chunk: list[Point] = []
    for p in year_of_minutes(n):
        chunk.append(p)
        if len(chunk) == batch:
            store.write(chunk)
            chunk = []
    if chunk:
        store.write(chunk)
    return n / (time.perf_counter() - t0)


def measure(name: str, store: TimeSeriesStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"{name}: writing {args.points} points in batches of {args.batch} ...", file=sys.stderr)
    rate = load(store, args.points, args.batch)
    end = START + args.points * MINUTE
    rows = []
    for label, span in RANGES.items():
        lo = max(START, end - span)
        query = functools.partial(
            store.query, TERMINAL, CHANNEL, lo, end, 1000, tz_offset_s=args.tz
        )
        ms, res = timed(query, args.repeat)
        rows.append(
            {
                "backend": name,
                "range": label,
                "query_ms": round(ms, 2),
                "result": "raw" if res.raw else f"{res.width}s buckets",
                "items": len(res.points) if res.raw else len(res.buckets),
                "write_points_per_s": round(rate),
            }
        )
    return rows


def influx_raw_aggregation(store: InfluxStore, args: argparse.Namespace) -> list[dict[str, Any]]:
    """InfluxDB aggregating the raw samples itself, same widths, no rollups."""
    end = START + args.points * MINUTE
    rows = []
    for label, span in RANGES.items():
        lo = max(START, end - span)
        width = choose_width(lo, end, 1000, args.tz)
        q = (
            'SELECT min("value"), mean("value"), max("value") FROM "samples" '  # noqa: S608
            f'WHERE "terminal" = {quote_str(TERMINAL)} AND "channel" = {quote_str(CHANNEL)} '
            f"AND time >= {lo}s AND time < {end}s "
            f"GROUP BY time({width}s, {bucket_offset(width, args.tz)}s) fill(none)"
        )
        ms, res = timed(functools.partial(store.client.query, store.database, [q]), args.repeat)
        series = res[0].get("series", [])
        rows.append(
            {
                "backend": "influx raw GROUP BY time",
                "range": label,
                "query_ms": round(ms, 2),
                "result": f"{width}s buckets",
                "items": len(series[0]["values"]) if series else 0,
                "write_points_per_s": None,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| backend | range | query ms (median) | answer | items | write points/s |",
        "|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        rate = "" if r["write_points_per_s"] is None else f"{r['write_points_per_s']:,}"
        out.append(
            f"| {r['backend']} | {r['range']} | {r['query_ms']} | {r['result']} | "
            f"{r['items']} | {rate} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=525_600, help="one-minute samples to write")
    ap.add_argument("--batch", type=int, default=10_000, help="points per write() call")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per query (median)")
    ap.add_argument("--tz", type=int, default=9 * 3600, help="UTC offset buckets follow (JST)")
    ap.add_argument("--backends", default="sqlite,postgresql,influx")
    ap.add_argument("--postgres-url", help="use this empty database instead of a private server")
    ap.add_argument("--influx-url", help="use this InfluxDB instead of a private server")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    wanted = args.backends.split(",")
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in wanted:
            url = f"sqlite:///{tmp}/bench.sqlite3"
            db.upgrade(url)
            engine = db.make_engine(url)
            stack.callback(engine.dispose)
            rows += measure("sql (SQLite)", SqlStore(engine), args)
            size = sum(os.path.getsize(p) for p in Path(tmp).glob("bench.sqlite3*"))
            print(f"SQLite file size: {size / 1e6:.1f} MB", file=sys.stderr)
        if "postgresql" in wanted:
            url = args.postgres_url or stack.enter_context(PostgresServer()).create_database(
                "bench"
            )
            db.upgrade(url)
            engine = db.make_engine(url)
            stack.callback(engine.dispose)
            rows += measure("sql (PostgreSQL)", SqlStore(engine), args)
        if "influx" in wanted:
            if args.influx_url:
                store = InfluxStore(InfluxClient(args.influx_url), f"bench_{int(time.time())}")
                store.create_database()
                store.prepare()
            else:
                store = stack.enter_context(InfluxServer()).store("bench")
            rows += measure("influx (rollups)", store, args)
            rows += influx_raw_aggregation(store, args)
            store.client.close()
    report = {
        "points": args.points,
        "batch": args.batch,
        "repeat": args.repeat,
        "tz_offset_s": args.tz,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": rows,
    }
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
