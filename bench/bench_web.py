"""Benchmark: server time of the web site over a year of one-minute data.

Builds a SQLite database (the default SQL backend; ``--postgres`` adds a
private PostgreSQL like the tests start) holding one terminal whose three
measured channels have a year of one-minute samples (3 x 525,600 points),
then times, in the app (Flask test client: routing, login session, database,
JSON/HTML rendering; no network):

- the terminal page (live values, open alarms, completeness, settings),
- the dashboard,
- the graph data of one channel over the last day, month and year
  (goal for the year: <= 50 ms), at the point budgets the page asks for.

Figures, not pass/fail. Prints a Markdown table; ``--json`` writes them.

    .venv/bin/python bench/bench_web.py --json build/bench/web.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tests.support lives here

from cloud import db  # noqa: E402
from cloud.app import create_app  # noqa: E402
from cloud.config import Settings  # noqa: E402
from cloud.models import (  # noqa: E402
    Customer,
    IngestCounter,
    Role,
    Terminal,
    User,
    apply_birth,
)
from cloud.services.mailer import RecordingMailer  # noqa: E402
from cloud.services.passwords import Passwords  # noqa: E402
from cloud.services.publisher import RecordingPublisher  # noqa: E402
from cloud.timeseries import Point, SqlStore  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.web import CHANNELS_A, FAST_ARGON2, Clock, csrf_token  # noqa: E402

MINUTE, DAY = 60, 86400
END = datetime(2026, 3, 1, tzinfo=UTC)
CHANNELS = ("leak1.ior", "pm1.kw", "th1.t")
PASSWORD = "bench password 1"  # noqa: S105


def year_of_minutes(channel: int, n: int) -> Iterator[Point]:
    start = int(END.timestamp()) - n * MINUTE
    for i in range(n):
        ts = start + i * MINUTE
        value = 20 + 10 * math.sin(2 * math.pi * (ts % DAY) / DAY) + (i % 97) * 0.05 + channel
        yield Point("BENCH1", CHANNELS[channel], ts, round(value, 2))


def populate(url: str, points: int, batch: int) -> tuple[float, int]:
    """Schema, one customer/user/terminal, a year of samples. Returns (points/s, rows)."""
    db.upgrade(url)
    engine = db.make_engine(url)
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        customer = Customer(name="Bench Co")
        s.add(customer)
        s.flush()
        s.add(
            User(
                email="bench@bench.test",
                role=Role.CUSTOMER_ADMIN,
                customer_id=customer.id,
                language="en",
                password_hash=Passwords(1, 8192, 1, 10).hash(PASSWORD),
            )
        )
        s.add(Terminal(id="BENCH1", customer_id=customer.id, name="Bench terminal"))
        s.flush()
        apply_birth(s, "BENCH1", CHANNELS_A, boot=1, at=END - timedelta(days=400))
        days = points * MINUTE // DAY
        for d in range(days + 1):
            s.add(
                IngestCounter(
                    terminal_id="BENCH1",
                    day=(END - timedelta(days=d)).date(),
                    frames=1440,
                    samples=1440 * len(CHANNELS),
                    duplicates=0,
                    historical=0,
                    rejected=0,
                )
            )
        s.commit()
    t0 = time.perf_counter()
    total = 0
    for ch in range(len(CHANNELS)):
        chunk: list[Point] = []
        for p in year_of_minutes(ch, points):
            chunk.append(p)
            if len(chunk) == batch:
                total += store.write(chunk)
                chunk = []
        if chunk:
            total += store.write(chunk)
    rate = total / (time.perf_counter() - t0)
    engine.dispose()
    return rate, total


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(median ms, max ms, last result) over ``repeat`` runs after one warm-up."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times), result


def measure(name: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"{name}: writing {len(CHANNELS)} x {args.points} points ...", file=sys.stderr)
    rate, total = populate(url, args.points, args.batch)
    engine = db.make_engine(url)
    app = create_app(
        Settings(database_url=url),
        secret_key="bench",  # noqa: S106
        development=True,  # a bench rig: no site URL, a throwaway key
        cookie_secure=False,
        engine=engine,
        store=SqlStore(engine),
        publisher=RecordingPublisher(),
        mailer=RecordingMailer(),
        clock=Clock(END),
        **FAST_ARGON2,
    )
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"csrf_token": token, "email": "bench@bench.test", "password": PASSWORD}
    )
    assert response.status_code == 302, response.status_code
    end = int(END.timestamp())
    requests = [
        ("terminal page", "/terminals/BENCH1"),
        ("dashboard", "/"),
        (
            "graph data, day (raw)",
            f"/terminals/BENCH1/series.json?channel=pm1.kw&start={end - DAY}&end={end}&points=2000",
        ),
        (
            "graph data, month",
            f"/terminals/BENCH1/series.json?channel=pm1.kw"
            f"&start={end - 30 * DAY}&end={end}&points=2000",
        ),
        (
            "graph data, year, 1000 points",
            f"/terminals/BENCH1/series.json?channel=pm1.kw"
            f"&start={end - 365 * DAY}&end={end}&points=1000",
        ),
        (
            "graph data, year, 2000 points",
            f"/terminals/BENCH1/series.json?channel=pm1.kw"
            f"&start={end - 365 * DAY}&end={end}&points=2000",
        ),
    ]
    rows = []
    for label, path in requests:

        def get(path: str = path) -> Any:
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
            return r

        median, worst, r = timed(get, args.repeat)
        items = len(r.get_json()["t"]) if r.is_json else None
        rows.append(
            {
                "backend": name,
                "request": label,
                "median_ms": round(median, 2),
                "max_ms": round(worst, 2),
                "bytes": len(r.data),
                "items": items,
                "write_points_per_s": round(rate),
                "points": total,
            }
        )
    engine.dispose()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| backend | request | median ms | max ms | items | bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        items = "" if r["items"] is None else r["items"]
        out.append(
            f"| {r['backend']} | {r['request']} | {r['median_ms']} | {r['max_ms']} | "
            f"{items} | {r['bytes']:,} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=525_600, help="one-minute samples per channel")
    ap.add_argument("--batch", type=int, default=10_000, help="points per write() call")
    ap.add_argument("--repeat", type=int, default=15, help="timed runs per request (median)")
    ap.add_argument("--postgres", action="store_true", help="also run on a private PostgreSQL")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        rows += measure("SQLite", f"sqlite:///{tmp}/bench.sqlite3", args)
        if args.postgres:
            url = stack.enter_context(PostgresServer()).create_database("benchweb")
            rows += measure("PostgreSQL", url, args)
    print(table(rows))
    print(
        f"\nwrite rate: {rows[0]['write_points_per_s']:,} points/s; "
        f"{rows[0]['points']:,} points per backend",
        file=sys.stderr,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "points_per_channel": args.points,
                    "channels": len(CHANNELS),
                    "repeat": args.repeat,
                    "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
