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
- :func:`account` counts generated / stored once / missing / duplicated
  against the database; :class:`Report` prints the figures and writes
  ``build/faults/<name>.json``.

``MIMAMORI_PROFILE=long`` (``make soak``) scales fleets, kills and fuzz runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
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

    def __init__(self, port: int, term: S.Terminal, *, window: int = 32,
                 ack_timeout: float = 3.0, max_timeout: float = 24.0,
                 live_birth: bool = False, will: bool = False) -> None:
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

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            # Before any publish of this connection: the broker handles one
            # client's packets in order, so no ack can miss the subscription.
            c.subscribe(topics.downlink(self.tid, "ack"), qos=1)
        self.events.put(("connect", rc.is_failure, time.monotonic()))

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
            if what == "connect" and not arg:
                self.connected = True
                self.connects += 1
                self._go_back()  # acks sent to the old connection are lost with it
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

    def __init__(self, port: int, n: int, *, period: float = 0.05, boot: int = 1,
                 start: int = S.T0, skew: dict[str, int] | None = None,
                 live_birth: bool = False, will: Collection[str] = ()) -> None:
        self.terms = [
            OutboxTerminal(port, S.Terminal(t, boot=boot, start=start + i + (skew or {}).get(t, 0)),
                           live_birth=live_birth, will=t in will)
            for i, t in enumerate(tids(n))
        ]
        self.period = period
        self.unsynced = set(skew or {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def wait_connected(self, timeout: float = START_S) -> None:
        S.wait_for(lambda: self._pump() and all(t.connected for t in self.terms),
                   timeout, "every terminal to connect")

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
        S.wait_for(lambda: self._pump() and not any(t.pending for t in self.terms),
                   timeout, "every outbox to empty (all frames acked by the cloud)")

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

    def __init__(self, broker: MosquittoBroker, workdir: Path, db_url: str,
                 client_id: str = "ingest-faults", extra: Iterable[str] = ()) -> None:
        super().__init__(broker, workdir, client_id, "faults",
                         {"MIMAMORI_DATABASE_URL": db_url}, extra=extra)

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

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
        assert self.tmp is not None
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", "fast",
                  "-w", "stop")
        self.restart()
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
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
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.tmp} "
                "-c fsync=off -c full_page_writes=off -c max_connections=50")
        deadline = time.monotonic() + 60
        while True:
            done = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"),
                             "-l", str(self.tmp / "log"), "-o", opts, "-w", "start")
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
            keys = {(r[0], int(r[1]), int(r[2])) for r in conn.execute(
                sa.select(t.c.terminal_id, t.c.boot, t.c.seq))}
            c = IngestCounter.__table__
            frames_n, samples_n = conn.execute(
                sa.select(sa.func.sum(c.c.frames), sa.func.sum(c.c.samples))).one()
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


class Observer:
    """A plain (not shared) subscriber on the service listener that records the
    order in which the broker delivers each terminal's frames."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.order: dict[str, list[int]] = {}
        self.client = broker.client("service", "ingest", INGEST_PASSWORD,
                                    client_id="faults-observer")
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
