"""Delivery isolation: other customers' alarm mail while one customer runs a tarpit.

usage: python bench/bench_delivery_isolation.py [--customers N] [--alarms N] [--spacing S]
                                                [--trigger-every S] [--trickle S]
                                                [--tarpit-bytes N] [--database URL]
                                                [--json PATH]

Prints one JSON object, then a markdown table (the "Delivery isolation"
section of docs/benchmarks.md is built from it); ``--json`` also writes it.

Real parts: the notification ledger in SQLite (or ``--database``), the
alarm engine (``cloud.alarms.on_frame``, as the ingest calls it) raising and
clearing leakage alarms on the terminals of ``--customers`` customers, each
with one e-mail target; the delivery worker as its own process (``python -m
cloud.notify run``, product defaults, with ``MIMAMORI_WEBHOOK_ALLOW`` set to
loopback because the tarpit listens there); an aiosmtpd server in this
process that stamps each message's arrival; and a tarpit (tests/support/
tarpit.py): an HTTP server that answers one byte every ``--trickle`` seconds
(``--tarpit-bytes`` bytes, far longer than any timeout per read).

The hostile customer is an administrator who keeps pressing "send test" on a
webhook target that points at the tarpit: every ``--trigger-every`` seconds
a test row is queued (``cloud.notify.ledger.queue_test``, what the site's
button calls, without the site's rate limit, to show the worst case).

After a warm-up (two alarms, not counted), two phases, ``quiet`` (no
tarpit traffic) then ``tarpit``: each raises or
clears ``--alarms`` alarms, customers taking turns, ``--spacing`` s apart.
Latency of one alarm: from just after the bench commits the alarm's
transaction (the ledger row is in) to the SMTP server having the message.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from aiosmtpd.controller import Controller

from cloud import db
from cloud.alarms import on_frame
from cloud.demo.procs import free_port
from cloud.models import Delivery, DeliveryChannel, NotificationTarget, utcnow
from cloud.notify import ledger
from cloud.notify.mail import message_id
from tests.support.notify import alarm_frame, leak_rule, world
from tests.support.tarpit import Tarpit

MAIL_DOMAIN = "bench.mimamori.example"
SETTLE_S = 120.0


class Stamps:
    """aiosmtpd handler: Message-ID -> arrival time."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        t = time.time()
        msg = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        with self.lock:
            self.arrived[str(msg["Message-ID"])] = t
        return "250 OK"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def summary(latencies: list[float], expected: int) -> dict[str, Any]:
    if not latencies:
        return {"alarms": expected, "mails": 0}
    return {
        "alarms": expected,
        "mails": len(latencies),
        "p50_ms": round(1000 * pct(latencies, 50)),
        "p95_ms": round(1000 * pct(latencies, 95)),
        "p99_ms": round(1000 * pct(latencies, 99)),
        "max_ms": round(1000 * max(latencies)),
    }


class Hostile(threading.Thread):
    """The administrator pressing "send test" on the tarpit target."""

    def __init__(self, engine: sa.Engine, target_id: int, every: float) -> None:
        super().__init__(name="hostile", daemon=True)
        self.engine, self.target_id, self.every = engine, target_id, every
        self.stop = threading.Event()
        self.queued = 0

    def run(self) -> None:
        with db.session_factory(self.engine)() as session:
            target = session.get(NotificationTarget, self.target_id)
            assert target is not None
            while not self.stop.wait(self.every):
                self.queued += ledger.queue_test(session, target, utcnow())
                session.commit()


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="mimamori-iso-"))
    url = args.database or f"sqlite:///{work / 'bench.sqlite3'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    stamps = Stamps()
    smtp_port = free_port()
    smtp = Controller(stamps, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(smtp.stop)
        pit = stack.enter_context(
            Tarpit(mode="trickle", interval_s=args.trickle, padding=args.tarpit_bytes)
        )
        with db.session_factory(engine)() as session:
            terminals = []
            for n in range(args.customers):
                terminal = world(session, tid=f"ISO{n:03d}", language="en")
                leak_rule(session, terminal)
                session.add(
                    NotificationTarget(
                        customer_id=terminal.customer_id,
                        channel=DeliveryChannel.EMAIL,
                        address=f"ops{n}@customer.example",
                    )
                )
                terminals.append(terminal)
            hostile_terminal = world(session, tid="HOSTILE", language="en")
            pit_target = NotificationTarget(
                customer_id=hostile_terminal.customer_id,
                channel=DeliveryChannel.WEBHOOK,
                address=pit.url,
            )
            session.add(pit_target)
            session.commit()
            pit_target_id = pit_target.id

        env = {
            **os.environ,
            "MIMAMORI_SMTP_PORT": str(smtp_port),
            "MIMAMORI_MAIL_FROM": f"alerts@{MAIL_DOMAIN}",
            "MIMAMORI_MESSAGE_ID_DOMAIN": MAIL_DOMAIN,
            "MIMAMORI_WEBHOOK_ALLOW": "127.0.0.1/32",
        }
        log = (work / "notify.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cloud.notify", "--database-url", url, "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop_worker() -> None:
            worker.terminate()
            try:
                worker.wait(90)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

        stack.callback(stop_worker)
        state = {t.id: "cleared" for t in terminals}
        seqs = itertools.count(1)

        def phase(name: str, hostile: bool, count: int) -> dict[str, Any]:
            attacker = Hostile(engine, pit_target_id, args.trigger_every) if hostile else None
            if attacker is not None:
                attacker.start()
                pit.wait_for_connections(len(pit.connections) + 1, timeout=30)
            committed: dict[str, float] = {}
            with db.session_factory(engine)() as session:
                last_id = session.scalar(sa.select(sa.func.max(Delivery.id))) or 0
                for i in range(count):
                    terminal = terminals[i % len(terminals)]
                    new = "raised" if state[terminal.id] == "cleared" else "cleared"
                    state[terminal.id] = new
                    at = datetime.now(UTC)
                    value = 600 if new == "raised" else 10
                    seq = next(seqs)
                    frame = alarm_frame(1, new, value, 300, at, seq=seq, tid=terminal.id)
                    on_frame(session, terminal, frame, at, False)
                    session.commit()
                    t = time.time()
                    rows = session.execute(
                        sa.select(Delivery.id, Delivery.dedup_key).where(
                            Delivery.id > last_id, Delivery.channel == DeliveryChannel.EMAIL
                        )
                    ).all()
                    session.commit()
                    for row_id, key in rows:
                        last_id = max(last_id, row_id)
                        committed[message_id(key, MAIL_DOMAIN)] = t
                    time.sleep(args.spacing)  # the bench's pace, not synchronisation
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline:
                with stamps.lock:
                    if all(m in stamps.arrived for m in committed):
                        break
                if worker.poll() is not None:
                    raise RuntimeError(f"notify exited {worker.returncode}; see {work}")
                time.sleep(0.2)
            if attacker is not None:
                attacker.stop.set()
                attacker.join(10)
            with stamps.lock:
                lat = [stamps.arrived[m] - t for m, t in committed.items() if m in stamps.arrived]
            out = summary(lat, len(committed))
            if attacker is not None:
                out["tests_queued"] = attacker.queued
                out["tarpit_connections"] = len(pit.connections)
            return out

        # Warm-up, not counted: the worker has started and sent a first mail.
        phase("warm-up", hostile=False, count=2)
        result["quiet"] = phase("quiet", hostile=False, count=args.alarms)
        result["tarpit"] = phase("tarpit", hostile=True, count=args.alarms)
    engine.dispose()
    result["setup"] = {
        "customers": args.customers,
        "alarms_per_phase": args.alarms,
        "spacing_s": args.spacing,
        "trigger_every_s": args.trigger_every,
        "tarpit": f"1 byte per {args.trickle} s, {len(pit.response)} bytes",
        "database": url.split(":", 1)[0],
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return result


def table(r: dict[str, Any]) -> str:
    lines = [
        "| phase | mails | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("quiet", "tarpit"):
        p = r[name]
        lines.append(
            f"| {name} | {p['mails']}/{p['alarms']} | {p.get('p50_ms', '-')} | "
            f"{p.get('p95_ms', '-')} | {p.get('p99_ms', '-')} | {p.get('max_ms', '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=20)
    p.add_argument("--alarms", type=int, default=100, help="alarm changes per phase")
    p.add_argument("--spacing", type=float, default=0.5, help="seconds between alarm changes")
    p.add_argument("--trigger-every", type=float, default=0.2, help="seconds between tests")
    p.add_argument("--trickle", type=float, default=0.3, help="seconds per tarpit byte")
    p.add_argument("--tarpit-bytes", type=int, default=100, help="about how long its answer is")
    p.add_argument("--database", help="database URL (default: a new SQLite file)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    print()
    print(table(result))
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
