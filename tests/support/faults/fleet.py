"""Terminals that behave on the wire as the edge agent does: an outbox per
terminal, and frames leave it only when the cloud's ack names them."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Collection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from protocol import frames, topics
from tests.support import ingest as S
from tests.support.broker import HOST
from tests.support.faults.common import START_S, Key, tids


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
