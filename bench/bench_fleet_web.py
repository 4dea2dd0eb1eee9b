"""Benchmark: the fleet overview (dashboard) of one customer with 1,000 terminals.

Builds a SQLite database (``--postgres`` adds a private PostgreSQL like the
tests start) with one customer owning ``--terminals`` terminals of ten
channels each (the test site's wiring): a few in alarm, warning, offline and
sensor trouble, three key channels with display names per terminal, an hour
of one-minute samples per channel, seven days of ingest counters and a
configuration sent to every other terminal. Then times, in the app (Flask
test client: routing, login session, database, HTML rendering; no network):

- the first page (the 50 worst terminals),
- a search by name, a status filter, and the last page.

Goals for the first page: under 60 KB of HTML and under 100 ms server time
at the 95th percentile. Figures, not pass/fail. Prints a Markdown table;
``--json`` writes them.

    .venv/bin/python bench/bench_fleet_web.py --json build/bench/fleet_web.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: tests.support lives here

from cloud import db  # noqa: E402
from cloud.app import create_app  # noqa: E402
from cloud.config import Settings  # noqa: E402
from cloud.models import (  # noqa: E402
    Alarm,
    AlarmState,
    ChannelLabel,
    Connectivity,
    Customer,
    IngestCounter,
    Role,
    Severity,
    Terminal,
    TerminalConfig,
    User,
    apply_birth,
)
from cloud.services.mailer import RecordingMailer  # noqa: E402
from cloud.services.passwords import Passwords  # noqa: E402
from cloud.services.publisher import RecordingPublisher  # noqa: E402
from cloud.timeseries import Point, SqlStore  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.web import CHANNELS_A, FAST_ARGON2, Clock, csrf_token  # noqa: E402

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
PASSWORD = "bench password 1"  # noqa: S105
KEY_CHANNELS = {"leak1.ior": "絶縁 Ior", "pm1.kw": "受電電力", "th1.t": "室温"}
SAMPLES = 60  # one-minute samples per channel


def state_of(i: int) -> tuple[Connectivity, str | None, str | None]:
    """(connectivity, open alarm cond, severity) of terminal ``i``: 1 % alarm,
    3 % warning, 2 % offline, 1 % sensor trouble, the rest normal."""
    k = i % 100
    if k == 0:
        return Connectivity.ONLINE, "leak", Severity.ALARM
    if k in (1, 2, 3):
        return Connectivity.ONLINE, "hi", Severity.WARNING
    if k in (4, 5):
        return Connectivity.OFFLINE, "offline", Severity.ALARM
    if k == 6:
        return Connectivity.ONLINE, "unreach", Severity.WARNING
    return Connectivity.ONLINE, None, None


def populate(url: str, terminals: int) -> None:
    db.upgrade(url)
    engine = db.make_engine(url)
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        customer = Customer(name="Fleet Co")
        s.add(customer)
        s.flush()
        s.add(
            User(
                email="fleet@bench.test",
                role=Role.CUSTOMER_ADMIN,
                customer_id=customer.id,
                language="ja",
                password_hash=Passwords(1, 8192, 1, 10).hash(PASSWORD),
            )
        )
        for i in range(terminals):
            tid = f"FT{i:04d}"
            conn, cond, severity = state_of(i)
            s.add(
                Terminal(
                    id=tid,
                    customer_id=customer.id,
                    name=f"第{i + 1}変電所",
                    site_address=f"東京都港区芝公園{i % 40 + 1}丁目{i % 17 + 1}番",
                    connectivity=conn,
                    last_seen_at=NOW - timedelta(minutes=1 + i % 5),
                    contract_start=(NOW - timedelta(days=90)).date(),
                )
            )
            s.flush()
            apply_birth(s, tid, CHANNELS_A, boot=1, at=NOW - timedelta(days=30))
            s.add_all(
                ChannelLabel(terminal_id=tid, channel=ch, display_name=name, key=True)
                for ch, name in KEY_CHANNELS.items()
            )
            if cond is not None:
                s.add(
                    Alarm(
                        terminal_id=tid,
                        channel=None if cond == "offline" else "leak1.ior",
                        cond=cond,
                        severity=severity,
                        state=AlarmState.RAISED,
                        raised_at=NOW - timedelta(minutes=i % 60),
                        value=55.0,
                        threshold=50.0,
                    )
                )
            s.add_all(
                IngestCounter(
                    terminal_id=tid,
                    day=(NOW - timedelta(days=d)).date(),
                    frames=1440,
                    samples=1440 * len(CHANNELS_A),
                    duplicates=0,
                    historical=0,
                    rejected=0,
                )
                for d in range(7)
            )
            if i % 2:
                s.add(
                    TerminalConfig(
                        terminal_id=tid, version=1, document={"sampling": {"pm1.kw": 60}}
                    )
                )
        s.commit()
    end = int(NOW.timestamp())
    for i in range(terminals):
        tid = f"FT{i:04d}"
        store.write(
            Point(tid, ch.name, end - 60 * k, 10 + (i % 7) + ch.alias + k * 0.01)
            for ch in CHANNELS_A
            for k in range(1, SAMPLES + 1)
        )
    engine.dispose()


def percentile(sorted_ms: list[float], q: float) -> float:
    return sorted_ms[min(len(sorted_ms) - 1, max(0, round(q * len(sorted_ms)) - 1))]


def timed(fn: Any, repeat: int) -> tuple[dict[str, float], Any]:
    """Wall-clock and CPU milliseconds (median, p95, max) of ``repeat`` runs
    after two warm-ups, and the last result. CPU time is this thread's: the
    app, SQLite and the rendering, without the waits a busy machine adds."""
    fn()
    result = fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.thread_time()
        result = fn()
        cpu.append((time.thread_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
    wall.sort()
    cpu.sort()
    figures = {
        "median_ms": statistics.median(wall),
        "p95_ms": percentile(wall, 0.95),
        "max_ms": wall[-1],
        "cpu_median_ms": statistics.median(cpu),
        "cpu_p95_ms": percentile(cpu, 0.95),
    }
    return {k: round(v, 1) for k, v in figures.items()}, result


def measure(name: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"{name}: {args.terminals} terminals ...", file=sys.stderr)
    t0 = time.perf_counter()
    populate(url, args.terminals)
    print(f"{name}: built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
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
        clock=Clock(NOW),
        **FAST_ARGON2,
    )
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/login", data={"csrf_token": token, "email": "fleet@bench.test", "password": PASSWORD}
    )
    assert response.status_code == 302, response.status_code
    last = -(-args.terminals // 50)
    requests = [
        ("first page (50 worst)", "/"),
        ("search by name", "/?q=第12"),
        ("status filter: warning", "/?status=warning"),
        (f"last page ({last})", f"/?page={last}"),
    ]
    rows = []
    for label, path in requests:

        def get(path: str = path) -> Any:
            r = client.get(path)
            assert r.status_code == 200, (path, r.status_code)
            return r

        figures, r = timed(get, args.repeat)
        rows.append(
            {
                "backend": name,
                "request": label,
                **figures,
                "bytes": len(r.data),
                "rows": r.get_data(as_text=True).count("<tr class="),
            }
        )
    engine.dispose()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| backend | request | median ms | p95 ms | max ms | CPU median ms | CPU p95 ms "
        "| rows | HTML bytes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['backend']} | {r['request']} | {r['median_ms']} | {r['p95_ms']} | "
            f"{r['max_ms']} | {r['cpu_median_ms']} | {r['cpu_p95_ms']} | {r['rows']} | "
            f"{r['bytes']:,} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--terminals", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=40, help="timed runs per request")
    ap.add_argument("--postgres", action="store_true", help="also run on a private PostgreSQL")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        rows += measure("SQLite", f"sqlite:///{tmp}/fleet.sqlite3", args)
        if args.postgres:
            url = stack.enter_context(PostgresServer()).create_database("benchfleet")
            rows += measure("PostgreSQL", url, args)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "terminals": args.terminals,
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
