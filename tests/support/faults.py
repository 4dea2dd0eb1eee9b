"""The fault tier's moving parts: a terminal fleet with outboxes, killable
ingest workers and databases, and the loss/duplicate accounting.

- :class:`Fleet` plays N terminals the way the edge agent behaves on the
  wire: every frame goes into an in-memory outbox first and leaves it only
  when the cloud's ack names it (not on the broker's PUBACK); everything
  still pending is republished (in order) after each reconnect and after an
  ack timeout. Duplicates on the wire are expected; the cloud deduplicates
  on (terminal, boot, seq).
- :class:`IngestProcess` is ``python -m cloud.ingest`` as a child process
  that can be SIGKILLed and restarted with the same client id (session).
- :class:`AlarmSweeper` runs the scheduler's alarm sweep against the test's
  database on a short period.
- :class:`KillablePostgres` is the test PostgreSQL with a SIGKILL of the
  postmaster and a restart on the same port and data directory.
- :class:`CuttableLink` relays the terminals' TCP link to the broker and
  can cut it; :class:`ImpairedLink` makes that relay slow and lossy
  (delay, jitter, a rate cap, stalls, resets) in userspace, for want of
  the kernel's netem.
- :func:`account` counts generated / stored once / missing / duplicated
  against the database; :class:`Report` prints the figures and writes
  ``build/faults/<name>.json``.

``MIMAMORI_PROFILE=long`` (``make soak``) scales fleets, kills and fuzz runs.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import queue
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.pool import NullPool

from cloud import db
from cloud.alarms import sweep
from cloud.broker import account_from_row
from cloud.models import FrameReceipt, IngestCounter
from cloud.timeseries import SqlStore
from protocol import frames, topics
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("MIMAMORI_PROFILE", "short") == "long"
INGEST_PASSWORD = S.INGEST_PASSWORD
START_S = 30.0
Key = tuple[str, int, int]  # (terminal, boot, seq): the dedup key


def profile(short: Any, long: Any) -> Any:
    """The short-profile value, or the long one under ``MIMAMORI_PROFILE=long``."""
    return long if LONG else short


def tids(n: int) -> list[str]:
    return [f"F{i:03d}" for i in range(n)]


def accounts(terminal_ids: Iterable[str]) -> list[Any]:
    return [
        account_from_row("ingest", INGEST_PASSWORD, "ingest"),
        *(account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in terminal_ids),
    ]


def start_broker(workdir: Path, terminal_ids: Iterable[str]) -> MosquittoBroker:
    """Own Mosquitto with unlimited session queues (the shipped production
    setting is a million; what is under test here is loss, not that cap)."""
    broker = MosquittoBroker(
        workdir, accounts(terminal_ids), max_queued_messages=0, max_queued_bytes=0
    )
    broker.start()
    return broker


def kill_broker(broker: MosquittoBroker) -> None:
    """SIGKILL mosquitto: no store is written, sockets drop without DISCONNECT."""
    proc = broker._proc  # the support class keeps it private; a kill is test-only
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    broker._proc = None


# ------------------------------------------------------------------ terminals


class OutboxTerminal:
    """One terminal connection speaking the agent's protocol over paho (see
    module doc): a queued frame stays in :attr:`pending` until an ``ack``
    frame from the cloud (``mm/v1/<tid>/down/ack``) names it; at most
    ``window`` frames are in flight; everything unacknowledged goes again,
    oldest first, after each (re)connect and when the oldest frame in flight
    has waited ``ack_timeout`` seconds (doubling up to ``max_timeout`` while
    no ack comes at all), as ``edge.inflight`` does on the device. The
    timeout is shorter than the device's 60 s so a test run stays short.

    Two more habits of the agent's session are optional (the tests that
    count frames do not need them): ``live_birth`` publishes a birth stamped
    with the wall clock right after every connect, outside the outbox. It is
    what tells the cloud that the terminal is back: the outbox's frames
    carry sample times long past, so the ingest takes them as historical,
    and historical frames neither mark a terminal online nor clear its
    ``offline`` alarm. ``will`` makes a death frame the connection's last
    will. The agent builds a new one (new sequence number) on every
    connect; paho keeps one will for all reconnects, so here every
    connection of a terminal has the same death frame.

    paho calls back on its network thread while holding its own locks, so
    callbacks only enqueue events; :meth:`pump` (the fleet's thread) applies
    them. Never touch the outbox from a paho callback.
    """

    def __init__(
        self,
        port: int,
        term: S.Terminal,
        *,
        window: int = 32,
        ack_timeout: float = 3.0,
        max_timeout: float = 24.0,
        live_birth: bool = False,
        will: bool = False,
    ) -> None:
        self.term = term
        self.tid = term.tid
        self.window = window
        self.base_timeout = self.timeout = ack_timeout
        self.max_timeout = max_timeout
        self.pending: dict[Key, tuple[str, bytes]] = {}  # insertion order = seq order
        self.inflight: dict[Key, float] = {}  # sent since the last go-back -> when
        self.mids: dict[int, Key] = {}
        self.pubacked_at: dict[Key, float] = {}  # the broker's PUBACK (first one)
        self.acked_at: dict[Key, float] = {}  # the cloud's ack: the frame leaves the outbox
        self.published: dict[Key, int] = {}  # publishes per frame
        self.generated: list[Key] = []
        self.offline: list[Key] = []  # generated while the link was down
        self.live_birth = live_birth
        self.live_births: list[Key] = []  # published after each connect, not in the outbox
        self.will: Key | None = None
        self.events: queue.SimpleQueue[tuple[str, Any, float]] = queue.SimpleQueue()
        self.connected = False
        self.connects = 0
        self.timeouts = 0  # go-backs because no ack came
        self._progress = False
        # Publishing is allowed only on the connection whose connect event the
        # pump has handled (see _on_pre_connect); the lock orders the check
        # against paho's thread.
        self._pub_lock = threading.Lock()
        self._attempt = 0  # paho's connection attempts so far
        self._may_publish = False
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.tid, protocol=MQTTProtocolVersion.MQTTv5
        )
        c.username_pw_set(self.tid, S.PASSWORD.format(tid=self.tid))
        c.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # floats work
        c.max_queued_messages_set(0)
        if will:
            death = term.death(ts=int(time.time()))
            self.will = (self.tid, death["boot"], death["seq"])
            c.will_set(topics.uplink(self.tid, "death"), frames.encode(death), qos=1)
        c.on_pre_connect = self._on_pre_connect
        c.on_connect = self._on_connect
        c.on_disconnect = lambda _c, _u, _f, _rc, _p: self.events.put(
            ("disconnect", None, time.monotonic())
        )
        c.on_publish = lambda _c, _u, mid, rc, _p: self.events.put(
            ("puback", (mid, rc.is_failure), time.monotonic())
        )
        c.on_message = lambda _c, _u, msg: self.events.put(
            ("ack", bytes(msg.payload), time.monotonic())
        )
        self.client = c
        c.connect_async(HOST, port, keepalive=5)
        c.loop_start()

    def _on_pre_connect(self, _c: mqtt.Client, _u: Any) -> None:
        # paho calls this just before it opens the next socket. A frame
        # published from then until its CONNACK handler has resent the old
        # connection's unacknowledged frames would reach the broker ahead of
        # them: a newer frame stored before older ones (seen with resets in
        # test_slow_link). So publishing stops here, and restarts only when
        # the pump has handled this attempt's connect event (the go-back
        # resends from the oldest pending frame, so it may race paho's resend).
        with self._pub_lock:
            self._attempt += 1
            self._may_publish = False

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            # Before any publish of this connection: the broker handles one
            # client's packets in order, so no ack can miss the subscription.
            c.subscribe(topics.downlink(self.tid, "ack"), qos=1)
        self.events.put(("connect", (rc.is_failure, self._attempt), time.monotonic()))

    @property
    def resends(self) -> int:
        """Publishes beyond each frame's first."""
        return sum(n - 1 for n in self.published.values())

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame (durable at once, like the flash outbox) and try to send."""
        key = (frame["tid"], frame["boot"], frame["seq"])
        self.generated.append(key)
        self.pending[key] = (topics.uplink(frame["tid"], frame["type"]), frames.encode(frame))
        if self.connected:
            self._send_more(time.monotonic())
        else:
            self.offline.append(key)

    def _send_more(self, now: float) -> None:
        """Publish the oldest frames not in flight while the window has room."""
        for key in self.pending:
            if len(self.inflight) >= self.window:
                return
            if key in self.inflight:
                continue
            topic, payload = self.pending[key]
            with self._pub_lock:
                if not self._may_publish:
                    return  # reconnecting: the go-back after the connect sends it
                info = self.client.publish(topic, payload, qos=1)
            self.mids[info.mid] = key  # rc != 0: goes again after the reconnect
            self.published[key] = self.published.get(key, 0) + 1
            self.inflight[key] = now

    def _go_back(self) -> None:
        self.inflight.clear()

    def _apply_ack(self, payload: bytes, t: float) -> None:
        ack = frames.decode(payload)
        boot = ack["for_boot"]
        for first, count in ack["ranges"]:
            for seq in range(first, first + count):
                key = (self.tid, boot, seq)
                if key in self.pending:
                    del self.pending[key]
                    self.inflight.pop(key, None)
                    self.acked_at[key] = t
                    self._progress = True
                    self.timeout = self.base_timeout

    def pump(self) -> None:
        while True:
            try:
                what, arg, t = self.events.get_nowait()
            except queue.Empty:
                break
            if what == "connect" and not arg[0]:
                self.connected = True
                self.connects += 1
                self._go_back()  # acks sent to the old connection are lost with it
                with self._pub_lock:  # unless paho is already on its next attempt
                    self._may_publish = arg[1] == self._attempt
                if self.live_birth:
                    self._publish_live_birth()
            elif what == "disconnect":
                self.connected = False
            elif what == "puback":
                mid, failed = arg
                key = self.mids.pop(mid, None)
                if key is not None and not failed:
                    self.pubacked_at.setdefault(key, t)
            elif what == "ack":
                self._apply_ack(arg, t)
        if not self.connected:
            return
        now = time.monotonic()
        if self.inflight and now - next(iter(self.inflight.values())) >= self.timeout:
            self.timeouts += 1
            if not self._progress:
                self.timeout = min(self.timeout * 2, self.max_timeout)
            self._progress = False
            self._go_back()
        self._send_more(now)

    def _publish_live_birth(self) -> None:
        # Fire and forget like the agent's: a birth lost with its connection
        # is replaced by the next connection's.
        with self._pub_lock:
            if not self._may_publish:
                return  # that connection is gone already; the next one births
            birth = self.term.birth(ts=int(time.time()))
            self.client.publish(topics.uplink(self.tid, "birth"), frames.encode(birth), qos=1)
        self.live_births.append((self.tid, birth["boot"], birth["seq"]))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Fleet:
    """N outbox terminals publishing a birth then data frames from one thread.

    ``period`` seconds between rounds (each round one frame per terminal);
    :meth:`start` runs until :meth:`stop_generating`; :meth:`drain` waits
    until every outbox is empty. ``skew``: seconds a terminal's clock is
    off (its frames say unsynced); ``live_birth`` for every terminal and
    ``will`` for the terminals named: see :class:`OutboxTerminal`.
    """

    def __init__(
        self,
        port: int,
        n: int,
        *,
        period: float = 0.05,
        boot: int = 1,
        start: int = S.T0,
        skew: dict[str, int] | None = None,
        live_birth: bool = False,
        will: Collection[str] = (),
    ) -> None:
        self.terms = [
            OutboxTerminal(
                port,
                S.Terminal(t, boot=boot, start=start + i + (skew or {}).get(t, 0)),
                live_birth=live_birth,
                will=t in will,
            )
            for i, t in enumerate(tids(n))
        ]
        self.period = period
        self.unsynced = set(skew or {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def wait_connected(self, timeout: float = START_S) -> None:
        S.wait_for(
            lambda: self._pump() and all(t.connected for t in self.terms),
            timeout,
            "every terminal to connect",
        )

    def _pump(self) -> bool:
        for t in self.terms:
            t.pump()
        return True

    def _frame(self, t: OutboxTerminal, kind: str) -> dict[str, Any]:
        frame = t.term.birth() if kind == "birth" else t.term.data()
        frame["unsynced"] = t.tid in self.unsynced
        return frame

    def round(self) -> None:
        for t in self.terms:
            t.send(self._frame(t, "data" if t.generated else "birth"))
        self._pump()

    def start(self) -> Fleet:
        """Generate in a background thread (again after :meth:`stop_generating`)."""
        self._stop.clear()

        def run() -> None:
            try:
                next_at = time.monotonic()
                while not self._stop.is_set():
                    self.round()
                    next_at += self.period
                    # pacing the producer (a sample rate), not synchronisation
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
            except BaseException as err:
                self.error = err
                raise

        self._thread = threading.Thread(target=run, name="fleet", daemon=True)
        self._thread.start()
        return self

    def stop_generating(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"fleet thread failed: {self.error!r}")

    def drain(self, timeout: float = 120.0) -> None:
        S.wait_for(
            lambda: self._pump() and not any(t.pending for t in self.terms),
            timeout,
            "every outbox to empty (all frames acked by the cloud)",
        )

    def generated(self) -> list[Key]:
        return [k for t in self.terms for k in t.generated]

    def acked_at(self) -> dict[Key, float]:
        """When the cloud's ack named each frame."""
        return {k: v for t in self.terms for k, v in t.acked_at.items()}

    def resend_figures(self) -> dict[str, int]:
        """What the outboxes sent again: ``resends`` (publishes beyond each
        frame's first), ``resent_frames`` (frames published more than once),
        ``ack_timeouts`` (go-backs because no ack came), ``reconnects``."""
        return {
            "resends": sum(t.resends for t in self.terms),
            "resent_frames": sum(1 for t in self.terms for n in t.published.values() if n > 1),
            "ack_timeouts": sum(t.timeouts for t in self.terms),
            "reconnects": sum(max(0, t.connects - 1) for t in self.terms),
        }

    def terminals(self) -> list[S.Terminal]:
        return [t.term for t in self.terms]

    def close(self) -> None:
        self._stop.set()
        for t in self.terms:
            t.close()


# --------------------------------------------------------------------- ingest


class IngestProcess(S.IngestProcess):
    """The shared ingest process in the faults' group, with a database URL; its
    ``stop`` never fails a test that already killed things around it."""

    def __init__(
        self,
        broker: MosquittoBroker,
        workdir: Path,
        db_url: str,
        client_id: str = "ingest-faults",
        extra: Iterable[str] = (),
    ) -> None:
        super().__init__(
            broker, workdir, client_id, "faults", {"MIMAMORI_DATABASE_URL": db_url}, extra=extra
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------- alarms


class AlarmSweeper:
    """The scheduler's ``alarm_sweep`` job in a thread: the real
    :func:`cloud.alarms.sweep` (offline, stale, demand, reminders) with the
    wall clock and the SQL time-series store, every ``period`` seconds
    against the database at ``url``. The scheduler runs it every 60 s; a
    test's offline limits are seconds, so it comes round as often here.
    Like the scheduler, a failed run is recorded (:attr:`errors`) and the
    next one runs anyway.
    """

    def __init__(self, url: str, period: float = 0.5) -> None:
        self.period = period
        self.runs = 0
        self.marked_offline = 0  # SweepResult.offline, summed
        self.errors: list[str] = []
        self._engine = db.make_engine(url)
        self._sessions = db.session_factory(self._engine)
        self._store = SqlStore(self._engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-sweep", daemon=True)

    def start(self) -> AlarmSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._sessions() as session:
                    self.marked_offline += sweep(session, datetime.now(UTC), self._store).offline
            except Exception as err:  # the scheduler's boundary: log the run as failed
                self.errors.append(repr(err))
            self.runs += 1
            self._stop.wait(self.period)  # the job's period, not synchronisation

    def stop(self) -> None:
        """Stop after the run in progress (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._engine.dispose()


# ------------------------------------------------------------------- postgres


class KillablePostgres(PostgresServer):
    """The test PostgreSQL plus SIGKILL of the postmaster and a restart in place.

    The shared test server runs with ``synchronous_commit=off``: a commit
    returns before its WAL leaves the server's memory, so a SIGKILL loses
    commits the ingest already acknowledged (the first runs of
    ``test_sigkill_postgres`` lost frames exactly that way). Production runs
    with it on, and so does this server (``ALTER SYSTEM``, then a restart
    without the command-line override). ``fsync=off`` stays: a
    process kill does not lose what is in the OS page cache.
    """

    def start(self) -> KillablePostgres:
        super().start()
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
        assert self.tmp is not None
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", "fast", "-w", "stop"
        )
        self.restart()
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row[0] == "on", row
        return self

    def postmaster_pid(self) -> int:
        assert self.tmp is not None
        return int((self.tmp / "data" / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        S.wait_for(lambda: not _running(pid), 10, "the postmaster to die")

    def restart(self) -> None:
        """Start again on the same port and data; crash recovery runs first.

        Orphaned backends may hold the shared memory a moment after the
        postmaster died; pg_ctl refuses until they are gone, so retry.
        """
        assert self.tmp is not None
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.tmp} "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        deadline = time.monotonic() + 60
        while True:
            done = self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.tmp / "data"),
                "-l",
                str(self.tmp / "log"),
                "-o",
                opts,
                "-w",
                "start",
            )
            if done.returncode == 0:
                self._wait_ready()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not restart: {done.stderr}")
            time.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not reaped yet


# ------------------------------------------------------------------ accounting


def engine(url: str) -> sa.Engine:
    """No pool: each poll opens a fresh connection, so a restarted server is found."""
    return sa.create_engine(url, poolclass=NullPool)


def receipt_count(eng: sa.Engine) -> int:
    with eng.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) or 0)


def account(url: str, fleet: Fleet) -> dict[str, Any]:
    """Generated vs stored: the figures every fault test reports.

    ``stored_once``: generated frames with a receipt; ``missing``: without;
    ``duplicated``: frames the ingest counted as processed more than once
    (``ingest_counters.frames`` above the receipts) plus samples counted
    more than once; ``wrong_values``: stored sensor values that differ from
    what the terminals sent (or are absent).
    """
    eng = engine(url)
    try:
        with eng.connect() as conn:
            t = FrameReceipt.__table__
            keys = {
                (r[0], int(r[1]), int(r[2]))
                for r in conn.execute(sa.select(t.c.terminal_id, t.c.boot, t.c.seq))
            }
            c = IngestCounter.__table__
            frames_n, samples_n = conn.execute(
                sa.select(sa.func.sum(c.c.frames), sa.func.sum(c.c.samples))
            ).one()
        store = SqlStore(eng)
        stored = {p.key: p.value for p in store.iter_points() if not p.channel.startswith("$")}
    finally:
        eng.dispose()
    generated = fleet.generated()
    expected = S.expected_values(fleet.terminals())
    gen = set(generated)
    missing = sorted(gen - keys)
    n_samples = len(expected)
    wrong = sum(1 for k, v in expected.items() if stored.get(k) != v)
    return {
        "generated": len(generated),
        "stored_once": len(gen & keys),
        "missing": len(missing),
        "missing_keys": [list(k) for k in missing[:50]],
        "all_missing": missing,
        "duplicated": max(0, int(frames_n or 0) - len(keys))
        + max(0, int(samples_n or 0) - n_samples),
        "samples_expected": n_samples,
        "samples_counted": int(samples_n or 0),
        "wrong_values": wrong,
        "extra_values": len(set(stored) - set(expected)),
    }


class Report:
    """Figures of one fault test: printed and written to build/faults/<name>.json."""

    def __init__(self, name: str, **figures: Any) -> None:
        self.name = name
        self.figures: dict[str, Any] = {"profile": "long" if LONG else "short", **figures}

    def add(self, **figures: Any) -> None:
        self.figures.update(figures)

    def write(self) -> dict[str, Any]:
        self.figures.pop("all_missing", None)  # keys, for the test's own checks
        out = ROOT / "build" / "faults"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{self.name}.json").write_text(json.dumps(self.figures, indent=2) + "\n")
        shown = {k: v for k, v in self.figures.items() if k != "missing_keys"}
        print(f"\n[faults] {self.name}: {json.dumps(shown)}")
        return self.figures


def first_arrivals(seqs: list[int]) -> list[int]:
    """``seqs`` without repeats: the order in which each frame first arrived."""
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def random_pause(rng: random.Random, lo: float, hi: float) -> None:
    """Let the stream run for a random while: *where* a fault lands is the variable."""
    time.sleep(rng.uniform(lo, hi))


# -------------------------------------------------------------------- network


class CuttableLink:
    """A TCP relay between terminals and the broker's terminal listener.

    :meth:`cut` closes the listening socket and every relayed connection
    (the terminals see their link die, the broker sees them vanish);
    :meth:`restore` listens again on the same port. The cloud side of the
    broker is not touched, so only the terminals' link is cut.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((HOST, self.port))
        srv.listen(128)
        self.port = srv.getsockname()[1]
        self._server = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def cut(self) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            # close() alone does not wake a thread blocked in accept(): that
            # thread would go on accepting on the "closed" port. shutdown() does.
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                down, _ = srv.accept()
            except OSError:
                return  # cut
            try:
                up = socket.create_connection((HOST, self.target), 5)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class ImpairedLink(CuttableLink):
    """A slow, lossy radio link between terminals and the broker, in userspace.

    The kernel's ``sch_netem`` would do this on packets; this machine's
    kernel has none (``docs/faults.md``), so the relay of
    :class:`CuttableLink` does what an MQTT client can see of such a link
    at the level TCP hands to userspace. Each relayed connection has two
    directions (``up``: terminal to broker, ``down``: back), each with its
    own state and random numbers:

    - **delay**: every segment (what one ``recv`` returned, cut into pieces
      of at most ``mss`` bytes) arrives ``delay_s`` plus a uniform jitter in
      ``[-jitter_s, +jitter_s]`` after it left; bytes stay in order, so a
      late segment holds back the ones behind it (TCP's head-of-line
      blocking: what netem's reordering looks like above TCP);
    - **rate**: a direction sends at most ``rate`` bytes/s, one segment
      after the other (a radio per terminal, not one pipe shared by all);
      up to ``buffer_bytes`` wait in the relay, then it stops reading and
      the sender's socket buffers fill, as behind a real bottleneck;
    - **stalls**: TCP hides lost packets from userspace; what is left is
      time. On average every ``stall_every_s`` a direction freezes for a
      time drawn from ``stall_s`` (retransmission backoff): nothing
      leaves it meanwhile, then the backlog follows at ``rate``. A stall
      during which the direction had nothing to send goes unnoticed and is
      not counted;
    - **resets**: on average every ``reset_every_s`` (over the whole link,
      exponential gaps) one live connection, picked at random, is reset:
      both sockets are closed with an RST, and whatever the relay still
      held for either side is lost with them.

    Not modelled: loss or corruption that TCP does not repair into delay
    (it repairs all of it), congestion control (a lost packet here does not
    shrink a window), links shared by several terminals, and asymmetric
    settings (both directions get the same). A connection whose peer
    closes (FIN) is closed on the other side once what was queued before
    the FIN has been delivered.

    ``seed`` fixes every random draw: the reset schedule and which live
    connection each reset picks, and per connection (numbered in accept
    order) and direction the jitter and stall draws. Thread timing is not
    replayable, so the same seed repeats the fault pattern, not the exact
    interleaving. :meth:`figures` says what the link did. :meth:`cut` and
    :meth:`restore` work as on :class:`CuttableLink`; :meth:`close` ends
    the link.
    """

    def __init__(
        self,
        target_port: int,
        *,
        seed: int,
        delay_s: float = 0.15,
        jitter_s: float = 0.10,
        rate: float | None = 64 * 1024,
        stall_every_s: float | None = 20.0,
        stall_s: tuple[float, float] = (0.3, 2.0),
        reset_every_s: float | None = 10.0,
        buffer_bytes: int = 64 * 1024,
        mss: int = 1460,
    ) -> None:
        if delay_s < 0 or jitter_s < 0 or (rate is not None and rate <= 0) or mss <= 0:
            raise ValueError("delay and jitter must be >= 0, rate and mss > 0")
        self.seed = seed
        self.delay_s, self.jitter_s, self.rate = delay_s, jitter_s, rate
        self.stall_every_s, self.stall_s = stall_every_s, stall_s
        self.reset_every_s = reset_every_s
        self.buffer_bytes, self.mss = buffer_bytes, mss
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Direction]] = []  # directions with a head to send
        self._ticket = 0  # heap tie-break
        self._live: dict[int, _Relayed] = {}
        self._rng = random.Random(f"{seed}/resets")
        self._next_reset = self._draw_reset(time.monotonic())
        self._stopped = False
        self.connections = 0
        self.resets = 0
        self.resets_idle = 0  # reset moments without a live connection
        self.stalls = {"up": 0, "down": 0}
        self.stalled_s = 0.0
        self.relayed = {"up": 0, "down": 0}  # bytes delivered
        self.dropped_bytes = 0  # held by the relay when a reset or cut took the connection
        self.rate_waits = 0  # segments the rate cap held back
        self.rate_wait_max_s = 0.0  # the longest of those waits
        self.queued_max_bytes = 0  # the most one direction held at a time
        # connections ended by a peer (FIN or reset), not by this link:
        # "up" counts the terminal side, "down" the broker side
        self.peer_closed = {"up": 0, "down": 0}
        self.one_way_s: list[float] = []  # per segment: relay in -> relay out (planned)
        super().__init__(target_port)
        self._scheduler = threading.Thread(target=self._schedule, name="impaired-link", daemon=True)
        self._scheduler.start()

    # -- accepting and reading (one thread per direction, like CuttableLink)

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                down, _ = srv.accept()
            except OSError:
                return  # cut
            try:
                up = socket.create_connection((HOST, self.target), 5)
            except OSError:
                down.close()
                continue
            up.settimeout(None)  # create_connection's timeout would stay on recv
            for s in (down, up):
                # the relay decides when bytes leave; Nagle must not add to it
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cv:
                number = self.connections
                self.connections += 1
                conn = _Relayed(number, down, up)
                now = time.monotonic()
                conn.dirs = [
                    _Direction(self, conn, "up", src=down, dst=up, now=now),
                    _Direction(self, conn, "down", src=up, dst=down, now=now),
                ]
                self._live[number] = conn
            for d in conn.dirs:
                threading.Thread(
                    target=self._read, args=(d,), name=f"link-{number}-{d.name}", daemon=True
                ).start()

    def _read(self, d: _Direction) -> None:
        """Read ``d.src`` into the direction's queue. Only this thread closes
        ``d.src``, and only once the connection is finished: closing a
        socket another thread may be about to use risks its descriptor
        being reused under it."""
        conn = d.conn
        try:
            while not conn.dead:
                try:
                    data: bytes | None = d.src.recv(65536)
                except OSError:
                    data = None
                with self._cv:
                    if conn.dead:
                        break
                    if data is None:  # reset by the peer: the other side is reset too
                        self.peer_closed[d.name] += 1
                        self._finish(conn, rst=True)
                        break
                    now = time.monotonic()
                    if not data:  # FIN: the rest goes out first, then both sides close
                        self.peer_closed[d.name] += 1
                        self._enqueue(d, None, now)
                        self._cv.wait_for(lambda: conn.dead)
                        break
                    for i in range(0, len(data), self.mss):
                        self._enqueue(d, data[i : i + self.mss], now)
                    self._cv.notify_all()
                    self._cv.wait_for(lambda: conn.dead or d.queued < self.buffer_bytes)
        finally:
            with self._cv:
                self._finish(conn, rst=True)  # a no-op unless this thread failed
                d.src.close()  # after _finish set SO_LINGER 0 this sends the RST

    def _enqueue(self, d: _Direction, seg: bytes | None, now: float) -> None:
        """Plan when ``seg`` (None: the peer's FIN) arrives; caller holds the lock."""
        if seg is None:
            due = max(d.last_due, now)
        else:
            d.forget(now)
            free = d.gate(now)  # a stall holds back what arrives during it
            # The radio sends one segment after the other. Waiting for the
            # ones ahead counts as the rate's from the end of the last stall
            # that held them (before that it is the stall's).
            busy_from = max(free, d.held_until)
            if d.tx_free > busy_from:
                self.rate_waits += 1
                self.rate_wait_max_s = max(self.rate_wait_max_s, d.tx_free - busy_from)
            ready = max(free, d.tx_free)
            start = d.gate(ready)
            if start > ready:
                d.held_until = start
            end = start + (len(seg) / self.rate if self.rate else 0.0)
            d.tx_free = end
            delay = max(0.0, self.delay_s + d.rng.uniform(-self.jitter_s, self.jitter_s))
            due = max(d.last_due, end + delay)  # in order: no overtaking a late segment
            self.one_way_s.append(due - now)
            d.queued += len(seg)
            self.queued_max_bytes = max(self.queued_max_bytes, d.queued)
        d.last_due = due
        d.queue.append((due, seg))
        if len(d.queue) == 1:
            self._push(d, due)

    def _push(self, d: _Direction, due: float) -> None:
        self._ticket += 1
        heapq.heappush(self._heap, (due, self._ticket, d))
        self._cv.notify_all()

    # -- delivering (one scheduler thread for the whole link)

    def _schedule(self) -> None:
        with self._cv:
            while not self._stopped:
                now = time.monotonic()
                if now >= self._next_reset:
                    self._reset_one()
                    self._next_reset = self._draw_reset(now)
                while self._heap and self._heap[0][0] <= now:
                    _due, _t, d = heapq.heappop(self._heap)
                    if not d.conn.dead and d.queue:
                        self._deliver(d, now)
                wake = min(self._heap[0][0] if self._heap else math.inf, self._next_reset)
                self._cv.wait(min(1.0, max(0.0, wake - time.monotonic())))

    def _deliver(self, d: _Direction, now: float) -> None:
        """Send the head of ``d`` without blocking (one thread serves every
        connection); what the receiver cannot take yet is retried shortly."""
        due, seg = d.queue[0]
        if seg is None:
            self._finish(d.conn, rst=False)
            return
        try:
            n = d.dst.send(seg, socket.MSG_DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError:
            self._finish(d.conn, rst=True)
            return
        d.queued -= n
        self.relayed[d.name] += n
        if n < len(seg):
            d.queue[0] = (due, seg[n:])
            self._push(d, now + 0.005)
            return
        d.queue.popleft()
        if d.queue:
            self._push(d, d.queue[0][0])
        self._cv.notify_all()  # a reader may wait for room

    def _draw_reset(self, now: float) -> float:
        every = self.reset_every_s
        return now + self._rng.expovariate(1 / every) if every else math.inf

    def _reset_one(self) -> None:
        live = [self._live[k] for k in sorted(self._live)]
        if not live:
            self.resets_idle += 1
            return
        self._finish(self._rng.choice(live), rst=True)
        self.resets += 1

    def _finish(self, conn: _Relayed, *, rst: bool) -> None:
        """End ``conn`` (caller holds the lock): with an RST on both sides,
        or with a FIN. Wakes both readers, which close their sockets."""
        if conn.dead:
            return
        conn.dead = True
        self._live.pop(conn.number, None)
        for d in conn.dirs:
            self.dropped_bytes += d.queued
            d.queue.clear()
            d.queued = 0
        for s in conn.socks:
            with contextlib.suppress(OSError):
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_WR)
                s.shutdown(socket.SHUT_RD)  # wakes a recv() without sending anything
        self._cv.notify_all()

    # -- control and figures

    def cut(self) -> None:
        """Refuse new connections and close the relayed ones (FIN), like
        :meth:`CuttableLink.cut`."""
        super().cut()
        with self._cv:
            for conn in list(self._live.values()):
                self._finish(conn, rst=False)

    def close(self) -> None:
        """Cut, then stop the scheduler (idempotent)."""
        self.cut()
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        self._scheduler.join(10)

    def figures(self) -> dict[str, Any]:
        """The settings, the seed and what the link did so far.

        ``resets`` done (``resets_idle``: moments without a live
        connection); ``stalls`` that held something back and their summed
        length ``stalled_s``; bytes delivered per direction and
        ``dropped_bytes`` lost with reset or cut connections;
        ``rate_waits``: segments that found the radio still sending earlier
        ones, and the longest such wait ``rate_wait_max_s`` (the rate cap's
        doing: a stall's share is not counted); ``queued_max_bytes`` in one
        direction; connections a peer ended itself (``closed_by_terminal``,
        ``closed_by_broker``: keepalive timeouts, session takeovers, the
        test's own disconnects); the planned one-way time per segment.
        """
        with self._cv:
            lat = sorted(self.one_way_s)
            stalls = dict(self.stalls)
            relayed = dict(self.relayed)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else 0.0

        return {
            "seed": self.seed,
            "delay_s": self.delay_s,
            "jitter_s": self.jitter_s,
            "rate_bytes_s": self.rate,
            "stall_every_s": self.stall_every_s,
            "stall_s": list(self.stall_s),
            "reset_every_s": self.reset_every_s,
            "buffer_bytes": self.buffer_bytes,
            "connections": self.connections,
            "resets": self.resets,
            "resets_idle": self.resets_idle,
            "stalls": sum(stalls.values()),
            "stalls_up": stalls["up"],
            "stalls_down": stalls["down"],
            "stalled_s": round(self.stalled_s, 2),
            "bytes_up": relayed["up"],
            "bytes_down": relayed["down"],
            "dropped_bytes": self.dropped_bytes,
            "rate_waits": self.rate_waits,
            "rate_wait_max_s": round(self.rate_wait_max_s, 3),
            "queued_max_bytes": self.queued_max_bytes,
            "closed_by_terminal": self.peer_closed["up"],
            "closed_by_broker": self.peer_closed["down"],
            "segments": len(lat),
            "one_way_s": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        }


class _Relayed:
    """One connection through an :class:`ImpairedLink`: terminal and broker side."""

    def __init__(self, number: int, down: socket.socket, up: socket.socket) -> None:
        self.number = number
        self.socks = (down, up)
        self.dirs: list[_Direction] = []
        self.dead = False


class _Direction:
    """One direction of a relayed connection: the segments on their way and
    the state that plans their arrival (guarded by the link's lock)."""

    def __init__(
        self,
        link: ImpairedLink,
        conn: _Relayed,
        name: str,
        *,
        src: socket.socket,
        dst: socket.socket,
        now: float,
    ) -> None:
        self.link, self.conn, self.name, self.src, self.dst = link, conn, name, src, dst
        self.rng = random.Random(f"{link.seed}/{conn.number}/{name}")
        self.queue: deque[tuple[float, bytes | None]] = deque()  # (due, segment); None: FIN
        self.queued = 0  # bytes in the queue
        self.tx_free = 0.0  # when the radio has sent what it was given
        self.held_until = 0.0  # end of the last stall that held a queued segment
        self.last_due = 0.0
        # Stalls drawn ahead, oldest first: [start, end, counted]. Segments
        # are planned ahead of the clock (behind a stall or the rate cap), so
        # the plan keeps every stall that a later arrival may still fall in.
        self.plan: deque[list[Any]] = deque([[now, now, True]])
        self._draw_stall()

    def _draw_stall(self) -> None:
        every = self.link.stall_every_s
        last_end = self.plan[-1][1]
        if not every:
            self.plan.append([math.inf, math.inf, True])
            return
        start = last_end + self.rng.expovariate(1 / every)
        self.plan.append([start, start + self.rng.uniform(*self.link.stall_s), False])

    def forget(self, now: float) -> None:
        """Drop the stalls over by ``now`` (arrivals only move forward)."""
        while len(self.plan) > 1 and self.plan[0][1] <= now:
            self.plan.popleft()

    def gate(self, t: float) -> float:
        """The earliest moment from ``t`` on at which the direction is not
        stalled; counts a stall the first time it holds something back."""
        while self.plan[-1][1] <= t:
            self._draw_stall()
        for stall in self.plan:
            start, end, counted = stall
            if t < start:
                return t
            if t < end:
                if not counted:
                    stall[2] = True
                    self.link.stalls[self.name] += 1
                    self.link.stalled_s += end - start
                return float(end)
        return t


class Observer:
    """A plain (not shared) subscriber on the service listener that records the
    order in which the broker delivers each terminal's frames."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.order: dict[str, list[int]] = {}
        self.client = broker.client(
            "service", "ingest", INGEST_PASSWORD, client_id="faults-observer"
        )
        self.client.mqtt.on_message = self._on_message
        self.client.connect_ok()
        self.client.subscribe(topics.UPLINK_FILTER, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        frame = frames.decode(bytes(msg.payload))
        self.order.setdefault(frame["tid"], []).append(frame["seq"])

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------- power loss


def outbox_writer(directory: str, first_seq: int) -> None:
    """Child process of the power-loss test: a terminal's outbox under load.

    Puts data frames for ever; after each ``put`` returns prints ``P <rid>
    <seq>``, and every few frames acknowledges the oldest (as the agent does
    after a PUBACK), printing ``A <rid>`` just before. The parent SIGKILLs it at a
    random moment, usually in the middle of a write.
    """
    from edge.outbox import Outbox

    ob = Outbox(directory, budget=8 * 1024 * 1024, seg_bytes=4096)
    rng = random.Random(first_seq)
    seq = first_seq
    while True:
        rows = [[rng.randrange(10000) for _ in S.CHANNELS] for _ in range(rng.randint(1, 8))]
        rid = ob.put(frames.encode(S.data("F000", 1, seq, S.T0 + 60 * seq, rows)), "data")
        print(f"P {rid} {seq}", flush=True)
        seq += 1
        if seq % 4 == 0:
            done = [r for r, _k, _p in ob.peek(3)]
            for r in done:  # announced before: a kill inside ack() may have taken effect
                print(f"A {r}", flush=True)
            ob.ack(done)


if __name__ == "__main__":
    outbox_writer(sys.argv[1], int(sys.argv[2]))
