"""The real terminal agent in the fault tier: N :class:`edge.agent.Agent`
instances, each in a thread of the test process, as ``python -m edge.host``
runs one.

Each terminal is the agent's own code end to end: sampling a simulated
insulation monitor (:class:`firmware_sim.Bus`, real Modbus RTU frames handed
over in process as the fleet runner does, :class:`firmware_sim.fleet.FleetHal`),
its flash outbox in a directory of its own, its in-flight window and resends
(:mod:`edge.inflight`), its MQTT session with a last will and a live birth
after every connect (:mod:`edge.session`) over the host HAL's paho client.
Threads rather than one cooperative loop because the client waits for each
PUBACK, as umqtt does on a board: on a slow link one terminal's wait must not
hold up the others. Threads rather than processes because the test needs
what each agent queued.

Two timing knobs are shorter than the device's, so a run stays short: the
ack timeout (3 s instead of ``edge.control.ACK_TIMEOUT``, 60 s) and the
reconnect backoff's cap (2 s instead of 300 s). Sampling is the site's
fastest, once a second, and every sample leaves in a data frame of its own
(``upload`` 0), so a terminal queues about one frame a second.

What counts: every frame the agent queued (:class:`RecordingAgent` keeps a
copy; births of each boot included, live births and deaths are not queued)
is either stored once by the cloud or still on the terminal's flash when
the test stops it; frames are keyed (terminal, boot, seq).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge import control
from edge.agent import Agent
from edge.config import CLOUD_FILE, SITE_FILE, validate_cloud, validate_site
from edge.inflight import Inflight
from firmware_sim.bus import Bus
from firmware_sim.clock import SimClock
from firmware_sim.fleet import FleetHal
from protocol import frames
from tests.support import ingest as S
from tests.support.broker import HOST
from tests.support.faults.common import START_S, Key, tids

ACK_TIMEOUT_S = 3  # the device waits edge.control.ACK_TIMEOUT (60 s)
BACKOFF_MAX_MS = 2000  # the device's reconnect backoff grows to 300 s
DEVICE: dict[str, Any] = {"kind": "insulation", "unit": 1, "profile": "IM-100", "name": "leak"}
LOG_LINES = 200  # kept per terminal, for failure messages


class RecordingAgent(Agent):
    """The agent, keeping a copy of every frame it queues: ``(monotonic time,
    kind, (terminal, boot, seq), payload)``."""

    def __init__(self, hal: Any, state_dir: str, log: Any, queued: list[Any]) -> None:
        self.queued = queued  # before Agent.__init__: it queues the boot's birth
        super().__init__(hal, state_dir, log=log)

    def _enqueue(self, kind: str, payload: Any) -> None:
        _type, tid, boot, seq = frames.head(payload)
        self.queued.append((time.monotonic(), kind, (tid, boot, seq), bytes(payload)))
        super()._enqueue(kind, payload)


class FaultHal(FleetHal):
    """The fleet's HAL (in-process sensors, virtual Modbus waits) with an RTC
    ``clock_offset`` seconds off and an NTP server that answers only while
    :attr:`ntp_up` (it answers with the host's clock)."""

    def __init__(self, bus: Bus, seed: int, clock_offset: int = 0) -> None:
        super().__init__(bus, seed=seed)
        self.clock_offset = clock_offset
        self.ntp_up = True

    def ntp_time(self, server: str) -> float:  # type: ignore[override]
        if not self.ntp_up:
            raise OSError("NTP server %s did not answer" % server)
        return time.time()


def site_for(tid: str, port: int, ntp: str = "ntp.faults") -> dict[str, Any]:
    return {
        "terminal_id": tid,
        "broker": {"host": HOST, "port": port, "tls": False},
        "credentials": {"username": tid, "password": S.PASSWORD.format(tid=tid)},
        "wiring": [{k: DEVICE[k] for k in ("unit", "profile", "name")}],
        "sample": {"interval": 1, "unreachable_after": 3},
        "clock": {"ntp": ntp},
    }


def cloud_for(site: dict[str, Any], thresholds: list[dict[str, Any]]) -> dict[str, Any]:
    """The cloud part on flash from the start (no cloud config is published
    in these tests): every sample uploaded at once, no heartbeat in a run."""
    cloud = {"version": 1, "upload": 0, "heartbeat": 3600, "thresholds": thresholds}
    return dict(validate_cloud(cloud, validate_site(dict(site), path="site"), path="cloud"))


class AgentTerminal:
    """One agent in a thread: :meth:`start`, :meth:`stop` (an orderly shutdown:
    the open batch to flash, the connection dropped so the will fires)."""

    def __init__(
        self,
        tid: str,
        state_dir: Path,
        port: int,
        clock: SimClock,
        seed: int,
        *,
        clock_offset: int = 0,
        thresholds: list[dict[str, Any]] | None = None,
    ) -> None:
        self.tid = tid
        self.dir = state_dir
        self.bus = Bus(clock, seed=seed, sleep=lambda _s: None)
        self.bus.add(DEVICE["kind"], DEVICE["unit"])
        self.hal = FaultHal(self.bus, seed, clock_offset)
        state_dir.mkdir(parents=True, exist_ok=True)
        site = site_for(tid, port)
        (state_dir / SITE_FILE).write_text(json.dumps(site))
        (state_dir / CLOUD_FILE).write_text(json.dumps(cloud_for(site, thresholds or [])))
        self.queued: list[tuple[float, str, Key, bytes]] = []
        self.lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self.agent: RecordingAgent | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _log(self, text: str) -> None:
        self.lines.append("%.3f %s" % (time.monotonic(), text))

    def start(self) -> None:
        agent = RecordingAgent(self.hal, str(self.dir), self._log, self.queued)
        agent.inflight = Inflight(control.WINDOW, ACK_TIMEOUT_S, control.ACK_TIMEOUT_MAX)
        agent.session.backoff_max_ms = BACKOFF_MAX_MS
        self.agent = agent
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.tid, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        agent = self.agent
        assert agent is not None
        try:
            while not self._stop.is_set():
                wait = agent.step()
                if wait > 0:
                    self._stop.wait(wait / 1000)  # the agent's own nap, as edge.host sleeps
        except BaseException as err:  # a crash of the agent fails the test
            self.error = err
            self._log("agent crashed: %r" % (err,))

    def stop(self) -> None:
        """Idempotent; a terminal never started stops as it is."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(30)
        self._thread = None
        if self.agent is not None and self.error is None:
            self.agent.shutdown()

    @property
    def up(self) -> bool:
        return self.agent is not None and self.agent.session.up

    def generated(self) -> list[Key]:
        """(terminal, boot, seq) of every frame queued, in queueing order."""
        return [k for _t, _kind, k, _p in self.queued]

    def alarms(self) -> list[Key]:
        """The alarm frames queued, in queueing order."""
        return [k for _t, kind, k, _p in self.queued if kind == "alarm"]

    def still_queued(self) -> set[Key]:
        """Frames on the flash outbox (after :meth:`stop`): queued, never acknowledged."""
        assert self.agent is not None
        keys = set()
        for _rid, _kind, payload in self.agent.outbox.peek(1 << 30):
            head = frames.head(payload)
            keys.add((head[1], head[2], head[3]))
        return keys

    def log(self) -> str:
        return "\n".join(self.lines)


class AgentFleet:
    """N :class:`AgentTerminal` (ids ``F000``...) connected to ``port``, or
    terminal ``i`` to ``port[i]``.

    ``skew``: terminal id -> seconds its RTC is off, and its NTP server
    unreachable until the test sets ``hal.ntp_up`` (the others set their
    clocks by NTP at boot); ``thresholds``: the cloud part's alarm rules for
    every terminal.
    """

    def __init__(
        self,
        port: int | Sequence[int],
        n: int,
        workdir: Path,
        *,
        skew: dict[str, int] | None = None,
        thresholds: list[dict[str, Any]] | None = None,
        seed: int = 1,
    ) -> None:
        clock = SimClock(start=time.time(), speed=1)
        self.terms = [
            AgentTerminal(
                tid,
                workdir / tid,
                port if isinstance(port, int) else port[i],
                clock,
                seed * 1000 + i,
                clock_offset=(skew or {}).get(tid, 0),
                thresholds=thresholds,
            )
            for i, tid in enumerate(tids(n))
        ]
        for t in self.terms:
            t.hal.ntp_up = t.tid not in (skew or {})

    def start(self) -> AgentFleet:
        for t in self.terms:
            t.start()
        return self

    def wait_connected(self, timeout: float = START_S) -> None:
        S.wait_for(
            lambda: self.check() and all(t.up for t in self.terms),
            timeout,
            "every terminal to connect",
        )

    def check(self) -> bool:
        """Raise if an agent crashed (True otherwise, for use in wait predicates)."""
        for t in self.terms:
            if t.error is not None:
                raise AssertionError(f"{t.tid}: agent crashed: {t.error!r}\n{t.log()}")
        return True

    def generated(self) -> list[Key]:
        return [k for t in self.terms for k in t.generated()]

    def queued_between(self, start: float, end: float) -> list[Key]:
        """Frames queued between two monotonic times."""
        return [k for t in self.terms for at, _kind, k, _p in t.queued if start <= at < end]

    def stop(self) -> None:
        """Stop every agent (an orderly shutdown each); idempotent."""
        for t in self.terms:
            t.stop()
        self.check()

    def still_queued(self) -> set[Key]:
        return {k for t in self.terms for k in t.still_queued()}

    def payloads(self) -> dict[Key, bytes]:
        """Every queued frame's bytes, by key."""
        return {k: p for t in self.terms for _at, _kind, k, p in t.queued}

    def resend_figures(self) -> dict[str, int]:
        """``publishes``: PUBLISH packets the terminals sent (live births too);
        ``ack_timeouts``: go-backs because no ack came; ``reconnects``."""
        agents = [t.agent for t in self.terms if t.agent is not None]
        return {
            "publishes": sum(t.hal.count_packets() for t in self.terms),
            "ack_timeouts": sum(a.inflight.timeouts for a in agents),
            "reconnects": sum(max(0, a.session.connects - 1) for a in agents),
        }

    def term(self, tid: str) -> AgentTerminal:
        return next(t for t in self.terms if t.tid == tid)
