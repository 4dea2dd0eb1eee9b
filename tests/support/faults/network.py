"""The terminals' TCP link to the broker relayed in userspace: cut it, or make it slow and lossy."""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import socket
import struct
import threading
import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

from protocol import frames, topics
from tests.support.broker import HOST, MosquittoBroker
from tests.support.faults.common import INGEST_PASSWORD


class CuttableLink:
    """A TCP relay between terminals and the broker's terminal listener.

    :meth:`cut` closes the listening socket and every relayed connection
    (the terminals see their link die, the broker sees them vanish);
    :meth:`restore` listens again on the same port. The cloud side of the
    broker is not touched, so only the terminals' link is cut.

    ``cut(silent=True)`` cuts the same way on the terminals' side but leaves
    the broker's side of each connection open and silent, as a radio link
    that died without a word: the broker notices nothing until its keepalive
    runs out or the terminal connects again (then Mosquitto publishes the
    old connection's will, at the takeover). A later plain :meth:`cut`
    closes those too.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._held: set[socket.socket] = set()  # broker sides left open by a silent cut
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

    def cut(self, silent: bool = False) -> None:
        srv, self._server = self._server, None
        if srv is not None:
            # close() alone does not wake a thread blocked in accept(): that
            # thread would go on accepting on the "closed" port. shutdown() does.
            with contextlib.suppress(OSError):
                srv.shutdown(socket.SHUT_RDWR)
            srv.close()
        with self._lock:
            conns, self._conns = self._conns, []
            if silent:  # every second socket is a broker side (see _accept)
                self._held.update(conns[1::2])
                conns = conns[0::2]
            else:
                conns += self._held
                self._held = set()
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
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s not in self._held:  # a silent cut's broker side stays open
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

    def cut(self, silent: bool = False) -> None:
        """Refuse new connections and close the relayed ones (FIN), like
        :meth:`CuttableLink.cut`; a silent cut is not modelled here."""
        if silent:
            raise ValueError("ImpairedLink cuts only loudly")
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
    order in which the broker delivers each terminal's frames, and when
    (monotonic) each terminal's death frames (its wills) arrived."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.order: dict[str, list[int]] = {}
        self.deaths: dict[str, list[float]] = {}
        self.client = broker.client(
            "service", "ingest", INGEST_PASSWORD, client_id="faults-observer"
        )
        self.client.mqtt.on_message = self._on_message
        self.client.connect_ok()
        self.client.subscribe(topics.UPLINK_FILTER, qos=1)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        frame = frames.decode(bytes(msg.payload))
        self.order.setdefault(frame["tid"], []).append(frame["seq"])
        if frame["type"] == "death":
            self.deaths.setdefault(frame["tid"], []).append(time.monotonic())

    def close(self) -> None:
        self.client.close()
