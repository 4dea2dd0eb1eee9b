"""Alarm latency: a sensor register change to the mail at the SMTP server.

usage: python bench/bench_alarm_latency.py [--terminals N] [--events N] [--measured N]
                                           [--spacing S] [--ramp S] [--upload S]
                                           [--background-alarms N] [--notify-interval S]
                                           [--batch-ms MS] [--json PATH]

Prints one JSON object, then a markdown table (the "Alarm latency" section
of docs/benchmarks.md is built from it); ``--json`` also writes the JSON.

The whole path is real and on this machine: ``--measured`` simulated
insulation monitors (``python -m firmware_sim serve --pty``: pymodbus-framed
Modbus RTU on a pty, with a control channel), each read by a virtual terminal
(``python -m edge.host``: the real agent on the host HAL) that polls the
leakage channel every second (rule: alarm at 50 mA, no delay, no
hysteresis); the project's Mosquitto (tests/support/broker.py); the ingest
worker with the alarm engine (``python -m cloud.ingest``, product defaults);
the notification ledger in SQLite; the delivery loop (``python -m
cloud.notify run``, product defaults unless ``--notify-interval``); an
aiosmtpd server in this process that stamps each message's arrival.

Method: the bench sets the leakage register to 60 mA (raise) or 1 mA (clear)
through the simulator's control channel, terminals taking turns, each
terminal's changes ``--spacing`` s plus a random 0-1 s apart (so changes
fall at every phase of the 1-s poll and never coalesce). One change is one
alarm frame, one ledger row (one recipient per terminal) and one mail. Each
is timed with ``time.time()`` in this process at four points:

1. ``change``: just before the control request that changes the register;
2. ``at broker``: an MQTT observer (the ingest's account, plain subscription
   to ``mm/v1/+/up/alarm``, QoS 0) receives the alarm frame;
3. ``stored``: a poller (every 20 ms, so +-10 ms) first sees the ledger row,
   i.e. the ingest's transaction (frame, alarm, ledger row) committed;
4. ``mail``: the SMTP server has received the message (DATA complete).

Matching: the i-th change of a terminal is its i-th leakage
alarm frame and its i-th ledger row; the mail is found by its Message-ID,
which cloud.notify derives from the row's dedup key.

Two phases in one run: ``baseline`` (nothing but the measured terminals),
then ``loaded``: ``--terminals`` virtual terminals of the fleet runner
(``firmware_sim.fleet``, one worker process, four simulated devices / 18
channels each, 10 s sampling, uploads every ``--upload`` s, boots spread over
``--ramp`` s, ``--background-alarms`` of them with a leakage excursion every
minute whose mails go to the fleet customer) publish through the same broker
into the same ingest. The loaded phase starts once every fleet terminal's
birth is stored and every terminal has uploaded at least once. A warm-up
cycle (one raise and clear per measured terminal) precedes the baseline and
is not counted. All processes share this machine: the fleet and the
measured terminals compete with the cloud for the same cores.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import importlib.metadata
import json
import multiprocessing
import os
import platform
import queue
import random
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud import db
from cloud.broker import account_from_row
from cloud.codec import decode_frame
from cloud.demo.procs import Child, free_port
from cloud.models import (
    Alarm,
    AlarmCondition,
    Customer,
    Delivery,
    DeliveryChannel,
    NotificationTarget,
    Severity,
    Terminal,
)
from cloud.notify.mail import message_id
from edge.config import CLOUD_FILE, validate_cloud, validate_site
from firmware_sim.fleet import WorkerSpec, raise_fd_limit, worker_main
from firmware_sim.scenario import parse
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import Control, SimProcess
from tests.support.virtual_terminal import TerminalProcess, site_for

PASSWORD = "bench-secret"  # noqa: S105
INGEST_USER = "ingest"
MAIL_DOMAIN = "bench.mimamori.example"
LEAK = "leak.ior"
RAISE_MA, CLEAR_MA, ALARM_MA = 60.0, 1.0, 50.0
FLEET_DEVICES = [
    {"kind": "insulation", "unit": 1, "name": "leak"},
    {"kind": "meter", "unit": 2, "name": "power"},
    {"kind": "thermo", "unit": 3, "name": "room"},
    {"kind": "di", "unit": 4, "name": "di"},
]
LEDGER_POLL_S = 0.02
SETTLE_S = 60.0  # longest wait for a phase's last mail
STAGES = ("sensor -> broker", "broker -> stored", "stored -> mail", "total")
GOAL_P99_MS = 1100  # the 1-s poll plus the pipeline's own milliseconds


def measured_tid(n: int) -> str:
    return "LAT%02d" % n


# -- what the bench observes ---------------------------------------------------------


@dataclass
class Change:
    """One register change and when each stage saw its consequence (time.time())."""

    tid: str
    index: int  # the terminal's n-th change (0: its first raise)
    state: str  # "raised" or "cleared"
    phase: str
    at: float
    frame: float | None = None
    stored: float | None = None
    mail: float | None = None
    key: str | None = None  # the ledger row's dedup key


class Observer:
    """Alarm frames as the broker delivers them: ``frames[tid] = [(time, state), ...]``."""

    def __init__(self, port: int, tids: list[str]) -> None:
        self.tids = set(tids)
        self.frames: dict[str, list[tuple[float, str]]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-observer",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(INGEST_USER, PASSWORD)
        self.client.on_connect = lambda c, *_: c.subscribe("mm/v1/+/up/alarm", qos=0)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, 30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("observer: no SUBACK")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = time.time()
        frame = decode_frame(bytes(msg.payload))
        if frame.get("cond") != "leak" or frame["tid"] not in self.tids:
            return
        with self._lock:
            self.frames.setdefault(frame["tid"], []).append((t, str(frame["state"])))

    def of(self, tid: str) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.frames.get(tid, []))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class LedgerWatch:
    """Polls the ledger for new rows; ``rows[id] = (first seen, tid, event, dedup key)``."""

    def __init__(self, url: str) -> None:
        self.engine = db.make_engine(url)
        self.rows: dict[int, tuple[float, str, str, str]] = {}
        self._lock = threading.Lock()
        self._last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stmt = (
            sa.select(Delivery.id, Alarm.terminal_id, Delivery.event, Delivery.dedup_key)
            .join(Alarm, Alarm.id == Delivery.alarm_id)
            .where(Delivery.id > sa.bindparam("last"), Alarm.cond == "leak")
            .order_by(Delivery.id)
        )
        while not self._stop.wait(LEDGER_POLL_S):
            with self.engine.connect() as conn:
                found = conn.execute(stmt, {"last": self._last}).all()
            t = time.time()
            with self._lock:
                for row_id, tid, event, key in found:
                    self.rows[row_id] = (t, tid, event, key)
                    self._last = max(self._last, row_id)

    def by_terminal(self) -> dict[str, list[tuple[float, str, str]]]:
        """tid -> [(first seen, event, dedup key), ...] in ledger order."""
        with self._lock:
            rows = sorted(self.rows.items())
        out: dict[str, list[tuple[float, str, str]]] = {}
        for _row_id, (t, tid, event, key) in rows:
            out.setdefault(tid, []).append((t, event, key))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()


class _SmtpHandler:
    def __init__(self, sink: SmtpStamps) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        t = time.time()
        msg = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        self.sink.add(str(msg["Message-ID"]), t)
        return "250 OK"


class SmtpStamps:
    """aiosmtpd on a free loopback port: Message-ID -> arrival time."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.count = 0
        self._lock = threading.Lock()
        self.controller = Controller(
            _SmtpHandler(self), hostname=HOST, port=self.port, ready_timeout=10
        )
        self.controller.start()

    def add(self, mid: str, t: float) -> None:
        with self._lock:
            self.arrived.setdefault(mid, t)
            self.count += 1

    def get(self, mid: str) -> float | None:
        with self._lock:
            return self.arrived.get(mid)

    def close(self) -> None:
        self.controller.stop()


# -- the processes ----------------------------------------------------------------------


class Measured:
    """One simulated insulation monitor on a pty and the virtual terminal reading it."""

    def __init__(self, n: int, port: int, workdir: Path, stack: contextlib.ExitStack) -> None:
        self.tid = measured_tid(n)
        self.sim = stack.enter_context(
            SimProcess(
                "--pty", "--control", f"{HOST}:0", "--device", "insulation:1", "--seed", str(n)
            )
        )
        self.control = Control(self.sim.address("control"))
        stack.callback(self.control.close)
        site = site_for(
            self.tid,
            port,
            wiring=[{"unit": 1, "profile": "IM-100", "name": "leak"}],
            sample={"interval": 10, "unreachable_after": 3},
        )
        site["credentials"]["password"] = PASSWORD
        # The cloud part the settings page would push: leakage read every second,
        # an alarm level only (one frame per change), no delay, no hysteresis.
        cloud = validate_cloud(
            {
                "version": 1,
                "sampling": {LEAK: 1},
                "upload": 60,
                "heartbeat": 300,
                "thresholds": [{"channel": LEAK, "cond": "leak", "alarm": ALARM_MA}],
            },
            validate_site(site),
        )
        self.vt = TerminalProcess(
            workdir / self.tid, site, self.sim.endpoints["pty"], args=("--quiet",)
        )
        self.vt.state_dir.mkdir(parents=True)
        (self.vt.state_dir / CLOUD_FILE).write_text(json.dumps(cloud))
        stack.enter_context(self.vt)
        self.changes = 0

    def change(self, phase: str) -> Change:
        raised = self.changes % 2 == 0
        c = Change(self.tid, self.changes, "raised" if raised else "cleared", phase, time.time())
        self.control.ok(cmd="set", unit=1, point="ior", value=RAISE_MA if raised else CLEAR_MA)
        self.changes += 1
        return c


class Fleet:
    """The background: one fleet worker process running ``n`` virtual terminals."""

    def __init__(self, n: int, port: int, args: argparse.Namespace, workdir: Path) -> None:
        leaky = [1 + k * n // args.background_alarms for k in range(args.background_alarms)]
        groups = {f"leak{k}": [t] for k, t in enumerate(leaky)}
        events = []
        for cycle in range(120):  # two hours of excursions: longer than any run
            for k in range(len(leaky)):
                at = args.ramp + cycle * 60 + k * 60 / len(leaky)
                events.append(
                    {
                        "at": at,
                        "action": "set",
                        "group": f"leak{k}",
                        "unit": 1,
                        "point": "ior",
                        "value": RAISE_MA,
                    }
                )
                events.append(
                    {
                        "at": at + 30,
                        "action": "set",
                        "group": f"leak{k}",
                        "unit": 1,
                        "point": "ior",
                        "value": CLEAR_MA,
                    }
                )
        sc = parse(
            {
                "name": "bench-background",
                "terminals": n,
                "prefix": "BF",
                "site": {"sample": {"interval": 10}},
                "cloud": {
                    "upload": args.upload,
                    "heartbeat": 300,
                    "thresholds": [
                        {"channel": LEAK, "cond": "leak", "warn": 30, "alarm": ALARM_MA}
                    ],
                },
                "device": FLEET_DEVICES,
                "groups": groups,
                "event": events,
            }
        )
        self.tids = [sc.tid(i) for i in range(1, n + 1)]
        state = workdir / "fleet"
        state.mkdir()
        self.log_path = state / "fleet-0.log"
        self.t0 = time.time()
        spec = WorkerSpec(
            0,
            sc,
            list(range(1, n + 1)),
            n,
            broker={"host": HOST, "port": port, "tls": False},
            passwords=dict.fromkeys(self.tids, PASSWORD),
            state_dir=str(state),
            t0=self.t0,
            ramp_s=args.ramp,
        )
        ctx = multiprocessing.get_context("spawn")
        self.reports = ctx.Queue()
        self.stop_event = ctx.Event()
        self.proc = ctx.Process(
            target=worker_main, args=(spec, self.reports, self.stop_event), daemon=True
        )
        self.proc.start()
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._read, name="fleet-stats", daemon=True)
        self._drain.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = self.reports.get(timeout=0.5)
            except queue.Empty:
                continue

    def check(self) -> None:
        if not self.proc.is_alive():
            try:
                tail = self.log_path.read_text(errors="replace")[-3000:]
            except FileNotFoundError:
                tail = ""
            raise RuntimeError(f"fleet worker exited {self.proc.exitcode}:\n{tail}")

    def stop(self) -> None:
        self.stop_event.set()
        self.proc.join(60)
        if self.proc.is_alive():
            self.proc.kill()
        self._stop.set()
        self._drain.join(5)


# -- set-up -------------------------------------------------------------------------


def seed(url: str, measured: list[str], fleet: list[str]) -> None:
    """Customers, contracted terminals, one mail target per measured terminal."""
    db.upgrade(url)
    engine = db.make_engine(url)
    start = date(2025, 1, 1)
    with db.session_factory(engine)() as s:
        for name, tids, per_terminal in (
            ("Latency Denki", measured, True),
            ("Fleet Denki", fleet, False),
        ):
            customer = Customer(name=name, timezone="Asia/Tokyo", language="en")
            s.add(customer)
            s.flush()
            s.add_all(
                Terminal(
                    id=t, customer_id=customer.id, name=t, contract_start=start, registered_on=start
                )
                for t in tids
            )
            s.flush()
            if per_terminal:
                for t in tids:
                    s.add(
                        NotificationTarget(
                            customer_id=customer.id,
                            terminal_id=t,
                            channel=DeliveryChannel.EMAIL,
                            address=f"{t.lower()}@{MAIL_DOMAIN}",
                            min_severity=Severity.WARNING,
                        )
                    )
                    s.add(AlarmCondition(terminal_id=t, channel=LEAK, cond="leak", alarm=ALARM_MA))
            else:
                s.add(
                    NotificationTarget(
                        customer_id=customer.id,
                        channel=DeliveryChannel.EMAIL,
                        address=f"fleet-ops@{MAIL_DOMAIN}",
                        min_severity=Severity.WARNING,
                    )
                )
        s.commit()
    engine.dispose()


def wait(predicate: Any, timeout: float, what: str, every: float = 0.2, alive: Any = None) -> None:
    """Poll ``predicate`` until true; RuntimeError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def births(url: str, tids: list[str]) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(Terminal)
                    .where(Terminal.id.in_(tids), Terminal.last_boot.is_not(None))
                )
                or 0
            )
    finally:
        engine.dispose()


# -- one phase ----------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    changes: list[Change] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    background: dict[str, Any] = field(default_factory=dict)


def drive(
    phase: Phase,
    terminals: list[Measured],
    *,
    count: int,
    spacing: float,
    rng: random.Random,
    check: Any,
) -> None:
    """Make ``count`` register changes, terminals taking turns, then return."""
    phase.started = time.time()
    m = len(terminals)
    due = {
        t.tid: phase.started + 0.5 + i * spacing / m + rng.random() for i, t in enumerate(terminals)
    }
    by_tid = {t.tid: t for t in terminals}
    while len(phase.changes) < count:
        tid = min(due, key=lambda k: due[k])
        left = due[tid] - time.time()
        if left > 0:
            time.sleep(left)  # a schedule, not synchronisation: the changes are the input
        phase.changes.append(by_tid[tid].change(phase.name))
        due[tid] += spacing + rng.random()
        if len(phase.changes) % 20 == 0:
            check()


def collect(
    changes: list[Change], observer: Observer, ledger: LedgerWatch, smtp: SmtpStamps
) -> None:
    """Fill in what has been seen of ``changes`` (all phases: a terminal's i-th
    change is its i-th alarm frame and its i-th ledger row). RuntimeError if a
    frame or row says the opposite state: the matching would be off."""
    by_tid: dict[str, list[Change]] = {}
    for c in changes:
        by_tid.setdefault(c.tid, []).append(c)
    rows = ledger.by_terminal()
    for tid, cs in by_tid.items():
        frames = observer.of(tid)
        led = rows.get(tid, [])
        for c in cs:
            if c.index < len(frames):
                t, state = frames[c.index]
                if state != c.state:
                    raise RuntimeError(f"{tid}: change {c.index} ({c.state}) got a {state} frame")
                c.frame = t
            if c.index < len(led):
                t, event, key = led[c.index]
                if event != c.state:
                    raise RuntimeError(f"{tid}: change {c.index} ({c.state}) got a {event} row")
                c.stored = t
                c.mail = smtp.get(message_id(key, MAIL_DOMAIN))
                c.key = key


def settle(
    phase: Phase,
    everything: list[Change],
    *,
    observer: Observer,
    ledger: LedgerWatch,
    smtp: SmtpStamps,
    check: Any,
) -> None:
    """Wait until every change of ``phase`` has its mail (or ``SETTLE_S`` passed)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        collect(everything, observer, ledger, smtp)
        if all(c.mail is not None for c in phase.changes) or time.monotonic() > deadline:
            break
        check()
        time.sleep(0.2)
    phase.ended = time.time()


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted or not)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def summarize(changes: list[Change]) -> dict[str, Any]:
    """Per stage: count, p50/p95/p99/max/mean in ms."""
    done = [
        c for c in changes if c.mail is not None and c.frame is not None and c.stored is not None
    ]
    spans: dict[str, list[float]] = {s: [] for s in STAGES}
    for c in done:
        assert c.frame is not None and c.stored is not None and c.mail is not None
        spans["sensor -> broker"].append(c.frame - c.at)
        spans["broker -> stored"].append(c.stored - c.frame)
        spans["stored -> mail"].append(c.mail - c.stored)
        spans["total"].append(c.mail - c.at)
    out: dict[str, Any] = {"changes": len(changes), "completed": len(done)}
    for name, vs in spans.items():
        if vs:
            out[name] = {
                "p50_ms": round(1000 * pct(vs, 50)),
                "p95_ms": round(1000 * pct(vs, 95)),
                "p99_ms": round(1000 * pct(vs, 99)),
                "max_ms": round(1000 * max(vs)),
                "mean_ms": round(1000 * sum(vs) / len(vs)),
            }
    return out


def ingest_stats(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its living descendants (an
    ingest worker may store in a writer process of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        fields = _stat(p)
        total += sum(int(x) for x in fields[11:13])  # utime, stime
        todo += children.get(p, [])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def background_meter(
    phase: Phase, stats_file: Path, pids: dict[str, int], fleet: Fleet | None
) -> Iterator[None]:
    """Frames stored by ingest, frames sent by the fleet and CPU use over the phase."""
    s0 = ingest_stats(stats_file).get("stored_frames", 0)
    f0 = fleet.last.get("sent", 0) if fleet else 0
    c0 = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.time()
    yield
    wall = time.time() - t0
    b = phase.background
    b["ingest_frames_per_s"] = round(
        (ingest_stats(stats_file).get("stored_frames", 0) - s0) / wall, 1
    )
    if fleet is not None:
        b["fleet_frames_per_s"] = round((fleet.last.get("sent", 0) - f0) / wall, 1)
        b["fleet_connected"] = fleet.last.get("up")
    b["cpu_share"] = {k: round((cpu_seconds(p) - c0[k]) / wall, 3) for k, p in pids.items()}
    b["load_avg_1min"] = round(os.getloadavg()[0], 2)


# -- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    measured = [measured_tid(n) for n in range(1, args.measured + 1)]
    fleet_tids = ["BF%04d" % i for i in range(1, args.terminals + 1)]
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "sqlalchemy": importlib.metadata.version("sqlalchemy"),
        "database": "sqlite",
        "terminals": args.terminals,
        "measured": args.measured,
        "events": args.events,
        "spacing_s": args.spacing,
        "upload_s": args.upload,
        "ramp_s": args.ramp,
        "background_alarm_terminals": args.background_alarms,
        "notify_interval_s": args.notify_interval or "product default",
        "batch_ms": args.batch_ms or "product default",
        "poll_s": 1,
        "ledger_poll_ms": round(LEDGER_POLL_S * 1000),
    }
    raise_fd_limit()  # mosquitto inherits it: one connection per terminal
    secret = account_from_row("x", PASSWORD, "terminal", iterations=101).password_hash
    accounts = [account_from_row(INGEST_USER, PASSWORD, "ingest")]
    accounts += [account_from_row(t, secret, "terminal") for t in measured + fleet_tids]
    everything: list[Change] = []
    phases: list[Phase] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        url = f"sqlite:///{work / 'cloud.sqlite3'}"
        seed(url, measured, fleet_tids)
        broker = stack.enter_context(MosquittoBroker(work / "mqtt", accounts))
        smtp = SmtpStamps()
        stack.callback(smtp.close)
        env = {
            **os.environ,
            "MIMAMORI_DATABASE_URL": url,
            "MIMAMORI_INGEST_MQTT_PASSWORD": PASSWORD,
            "MIMAMORI_MESSAGE_ID_DOMAIN": MAIL_DOMAIN,
        }
        env.pop("MIMAMORI_INSTANCE_FILE", None)
        py = sys.executable
        stats_file = work / "ingest-stats.json"
        ingest_cmd = [
            py,
            "-m",
            "cloud.ingest",
            "--host",
            HOST,
            "--port",
            str(broker.ports["service"]),
            "--username",
            INGEST_USER,
            "--client-id",
            "bench-ingest",
            "--stats-file",
            str(stats_file),
            "--stats-interval",
            "1",
            "--log-level",
            "WARNING",
        ]
        if args.batch_ms is not None:
            ingest_cmd += ["--batch-ms", str(args.batch_ms)]
        # cwd without instance/mimamori.toml: only the environment configures it
        ingest = Child("ingest", ingest_cmd, work / "ingest.log", env=env, cwd=work).start()
        stack.callback(ingest.stop, 20)
        wait(
            lambda: ingest_stats(stats_file).get("subscribed"),
            60,
            "the ingest to subscribe",
            alive=ingest.check,
        )
        notify_cmd = [
            py,
            "-m",
            "cloud.notify",
            "--database-url",
            url,
            "run",
            "--smtp-host",
            HOST,
            "--smtp-port",
            str(smtp.port),
            "--mail-from",
            f"alerts@{MAIL_DOMAIN}",
        ]
        if args.notify_interval is not None:
            notify_cmd += ["--interval", str(args.notify_interval)]
        notify = Child("notify", notify_cmd, work / "notify.log", env=env, cwd=work).start()
        stack.callback(notify.stop, 20)
        observer = Observer(broker.ports["service"], measured)
        stack.callback(observer.close)
        ledger = LedgerWatch(url)
        stack.callback(ledger.close)
        terminals = [
            Measured(n, broker.ports["terminal"], work, stack) for n in range(1, args.measured + 1)
        ]
        fleet: Fleet | None = None

        def check() -> None:
            ingest.check()
            notify.check()
            if fleet is not None:
                fleet.check()
            for t in terminals:
                if t.vt.proc is not None and t.vt.proc.poll() is not None:
                    raise RuntimeError(f"{t.tid} exited:\n{t.vt.log()[-2000:]}")

        wait(
            lambda: births(url, measured) == len(measured),
            60,
            "the measured terminals' births",
            alive=check,
        )
        pids = {"broker": broker.pid, "ingest": ingest.proc.pid, "notify": notify.proc.pid}

        def phase(name: str, count: int) -> Phase:
            p = Phase(name)
            with background_meter(p, stats_file, pids, fleet):
                drive(p, terminals, count=count, spacing=args.spacing, rng=rng, check=check)
                everything.extend(p.changes)
                settle(p, everything, observer=observer, ledger=ledger, smtp=smtp, check=check)
            print(
                f"{name}: {count} changes, {time.time() - p.started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            return p

        phase("warm-up", 2 * len(terminals))
        phases.append(phase("baseline", args.events))
        if args.terminals:
            fleet = Fleet(args.terminals, broker.ports["terminal"], args, work)
            stack.callback(fleet.stop)
            pids["fleet"] = fleet.proc.pid or 0
            wait(
                lambda: births(url, fleet_tids) == len(fleet_tids),
                args.ramp + 120,
                "the fleet's births",
                every=1.0,
                alive=check,
            )
            ready = fleet.t0 + args.ramp + args.upload + 5
            wait(
                lambda: time.time() >= ready,
                args.ramp + args.upload + 60,
                "every fleet terminal's first upload",
                every=1.0,
                alive=check,
            )
            phases.append(phase("loaded", args.events))
        result["mails_received"] = smtp.count
    result["phases"] = {}
    for p in phases:
        summary = summarize(p.changes)
        summary["duration_s"] = round(p.ended - p.started)
        summary["background"] = p.background
        result["phases"][p.name] = summary
    base, loaded = result["phases"].get("baseline"), result["phases"].get("loaded")
    if base and loaded:
        result["ratio_loaded_to_baseline"] = {
            stage: {
                k: round(loaded[stage][k] / max(1, base[stage][k]), 2)
                for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
            }
            for stage in STAGES
            if stage in base and stage in loaded
        }
    worst = loaded or base
    result["goal_p99_ms"] = GOAL_P99_MS
    result["goal_met"] = bool(
        worst and worst["total"]["p99_ms"] <= GOAL_P99_MS and worst["completed"] == worst["changes"]
    )
    return result


def table(r: dict[str, Any]) -> str:
    phases = r["phases"]
    names = [n for n in ("baseline", "loaded") if n in phases]
    head = "| stage | " + " | ".join(f"{n} p50 | {n} p95 | {n} p99 | {n} max" for n in names) + " |"
    if len(names) == 2:
        head += " p99 loaded ÷ baseline |"
    lines = [
        f"{r['measured']} measured terminals (1-s leakage poll), {r['events']} alarm changes "
        f"per phase; loaded: {r['terminals']} background terminals (upload every "
        f"{r['upload_s']} s, {r['background_alarm_terminals']} with an excursion a minute). "
        f"Times in ms:",
        "",
        head,
        "|---|" + "---:|" * (4 * len(names) + (1 if len(names) == 2 else 0)),
    ]
    for stage in STAGES:
        cells = []
        for n in names:
            s = phases[n].get(stage)
            cells += (
                [str(s[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
                if s
                else ["", "", "", ""]
            )
        row = f"| {stage} | " + " | ".join(cells) + " |"
        if len(names) == 2:
            ratio = r.get("ratio_loaded_to_baseline", {}).get(stage)
            row += f" {ratio['p99_ms']:.2f} |" if ratio else " |"
        lines.append(row)
    lines.append("")
    for n in names:
        p = phases[n]
        b = p["background"]
        lines.append(
            f"{n}: {p['completed']}/{p['changes']} mails in {p['duration_s']} s; ingest "
            f"{b.get('ingest_frames_per_s')} frames/s, fleet {b.get('fleet_frames_per_s', 0)} "
            f"frames/s, CPU share {b.get('cpu_share')}, load average {b.get('load_avg_1min')}"
        )
    lines.append(f"goal p99 <= {r['goal_p99_ms']} ms: {'met' if r['goal_met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--terminals",
        type=int,
        default=1000,
        help="background terminals in the loaded phase (0: baseline only)",
    )
    parser.add_argument("--events", type=int, default=100, help="alarm changes per phase")
    parser.add_argument("--measured", type=int, default=4, help="measured terminals")
    parser.add_argument(
        "--spacing",
        type=float,
        default=2.5,
        help="seconds between one terminal's changes (plus 0-1 s at random)",
    )
    parser.add_argument(
        "--ramp", type=float, default=30.0, help="seconds over which the fleet's terminals boot"
    )
    parser.add_argument("--upload", type=int, default=60, help="fleet upload period, seconds")
    parser.add_argument(
        "--background-alarms",
        type=int,
        default=10,
        help="fleet terminals with a leakage excursion every minute",
    )
    parser.add_argument(
        "--notify-interval",
        type=float,
        default=None,
        help="cloud.notify run --interval (default: the product's)",
    )
    parser.add_argument(
        "--batch-ms",
        type=int,
        default=None,
        help="cloud.ingest --batch-ms (default: the product's)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    if args.measured < 1 or args.events < 1 or args.spacing < 2:
        parser.error("need --measured >= 1, --events >= 1, --spacing >= 2")
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
