"""Fleet runner: hundreds to thousands of virtual terminals driven by a scenario.

Each worker process runs many real terminal agents (:class:`edge.agent.Agent`)
and steps them cooperatively from one loop: a heap of "next step due" times,
one :meth:`Agent.step` at a time. Nothing a terminal does may block the
others, so the pieces a single virtual terminal gets from the host HAL are
replaced where they would wait:

- sensors are served in process: :class:`InProcessLink` hands each request
  straight to the terminal's own simulated :class:`firmware_sim.Bus`
  (``handle()``), no pty, no socket;
- waiting is virtual: when the Modbus master waits out an inter-frame gap,
  a slow reply or a timeout, :class:`FleetHal` moves that terminal's ms
  clock ahead instead of sleeping. Its clock is ``max(real, ahead)``, so
  it never runs backwards and real time catches up after the burst;
- MQTT is the host HAL's paho client driven from this loop (one socket per
  terminal, polled without waiting); only CONNACK/SUBACK/PUBACK are waited
  for, and those are loopback round trips.

The scenario timeline (:mod:`firmware_sim.scenario`) is replayed in every
worker for the terminals it owns, against a start time shared by all
workers. The parent process prints a progress line and writes
``fleet-status.json`` in the state directory; per-worker logs go to
``fleet-<k>.log`` there. Terminal ``n``'s flash (site, cloud config, boot
counter, outbox) is ``<state-dir>/<terminal id>/``: run the fleet again with
the same directory and every terminal carries on as rebooted.
"""

from __future__ import annotations

import heapq
import json
import logging
import multiprocessing
import os
import queue
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from cloud.broker.passwd import is_password_hash, new_secret
from edge.agent import Agent
from edge.config import CLOUD_FILE, SITE_FILE
from edge.errors import ConfigError as EdgeConfigError
from edge.host.hal import HostHal, HostMQTTClient, Reboot
from edge.link import Link

from .bus import Bus
from .clock import SimClock
from .errors import SimError
from .scenario import Event, Scenario, load

STEP_MS = 500  # a terminal is stepped at most this often while idle
MQTT_TIMEOUT = 5.0  # CONNACK/SUBACK/PUBACK wait; a hung broker stalls a worker this long
REPORT_S = 1.0  # worker -> parent statistics period


# -- one terminal's hardware ------------------------------------------------------


class FleetHal(HostHal):
    """The host HAL with a virtual-wait ms clock, in-process sensors and a switchable uplink.

    ``bus`` is the terminal's simulated RS-485 bus. ``sleep_ms`` never sleeps:
    it moves this terminal's clock ahead (see the module doc).
    ``outage_until`` (ms on this clock) makes ``network_up()`` False.
    """

    def __init__(self, bus: Bus, ca: str | None = None, seed: int | None = None) -> None:
        super().__init__(None, ca=ca, timeout=MQTT_TIMEOUT, seed=seed)
        self.sim_bus = bus
        self.ahead = 0
        self.outage_until = 0
        self.packets_out = 0  # PUBLISH packets of every client this terminal had
        self._client: HostMQTTClient | None = None
        self.link: InProcessLink | None = None
        self._polls = 0

    def ticks_ms(self) -> int:  # type: ignore[override]
        real = time.monotonic_ns() // 1_000_000
        return real if real > self.ahead else self.ahead

    def sleep_ms(self, ms: int) -> None:  # type: ignore[override]
        if ms > 0:
            self.ahead = self.ticks_ms() + ms

    def open_link(self, bus: dict[str, Any]) -> Link:
        self._polls += self.link.requests if self.link is not None else 0
        self.link = InProcessLink(self.sim_bus, self)
        return self.link

    def polls(self) -> int:
        """Modbus requests sent over every link this terminal opened (one per boot)."""
        return self._polls + (self.link.requests if self.link is not None else 0)

    def network_up(self) -> bool:  # type: ignore[override]
        return self.ticks_ms() >= self.outage_until

    def mqtt_client(
        self, client_id: str, broker: dict[str, Any], credentials: dict[str, Any], keepalive: int
    ) -> HostMQTTClient:
        self.count_packets()
        self._client = super().mqtt_client(client_id, broker, credentials, keepalive)
        return self._client

    def count_packets(self) -> int:
        """PUBLISH packets sent so far (the current client's are folded in on replacement)."""
        if self._client is not None:
            self.packets_out += self._client.packets_out
            self._client.packets_out = 0
        return self.packets_out


class InProcessLink(Link):
    """The RS-485 line to a simulated bus inside this process.

    ``write`` hands the request to :meth:`Bus.handle`; ``read`` returns the
    reply once its (real-time) delay has passed on the terminal's clock, or
    nothing after ``timeout_ms`` for silence or a reply later than that.
    Either way the wait is virtual (:meth:`FleetHal.sleep_ms`). ``close``
    makes every later call fail with OSError, as an unplugged adapter would.
    """

    def __init__(self, bus: Bus, hal: FleetHal) -> None:
        self.bus = bus
        self.hal = hal
        self.requests = 0
        self._rx = b""
        self._due = 0
        self._closed = False

    def write(self, buf: bytes | bytearray) -> None:
        if self._closed:
            raise OSError("link closed")
        reply = self.bus.handle(bytes(buf))
        self.requests += 1
        self._rx = reply.frame or b""
        self._due = self.hal.ticks_ms() + int(reply.delay * 1000)

    def read(self, n: int, timeout_ms: int) -> bytes:
        if self._closed:
            raise OSError("link closed")
        wait = self._due - self.hal.ticks_ms()
        if self._rx and wait <= timeout_ms:
            self.hal.sleep_ms(wait)
            out, self._rx = self._rx[:n], self._rx[n:]
            return out
        self.hal.sleep_ms(timeout_ms)
        return b""

    def flush_input(self) -> None:
        self._rx = b""

    def close(self) -> None:
        # An agent's shutdown closes its link; the next boot opens a new one.
        self._closed = True


# -- one terminal -----------------------------------------------------------------


class Terminal:
    """A virtual terminal of the fleet: simulated sensors, HAL, and the agent while powered."""

    def __init__(
        self,
        number: int,
        tid: str,
        state_dir: Path,
        bus: Bus,
        *,
        hal: FleetHal,
        log: Callable[[str], None],
    ) -> None:
        self.number = number
        self.tid = tid
        self.state_dir = state_dir
        self.bus = bus
        self.hal = hal
        self.log = log
        self.agent: Agent | None = None
        self.off_until = 0  # ms on the terminal clock; powered off before that
        self.boots = 0
        self.failed: str | None = None

    def step(self) -> int:
        """Run one agent step (booting first if due); ms the terminal may wait."""
        if self.failed is not None:
            return 60_000
        if self.agent is None:
            if self.hal.ticks_ms() < self.off_until:
                return self.off_until - self.hal.ticks_ms()
            try:
                self.agent = Agent(self.hal, str(self.state_dir), log=self._log)
            except (EdgeConfigError, OSError, ValueError) as err:
                self.failed = str(err)
                self.log("%s: cannot boot: %s" % (self.tid, err))
                return 60_000
            self.boots += 1
        try:
            return self.agent.step()
        except Reboot:  # a reboot command from the cloud
            self.agent = None
            return 0

    def _log(self, text: str) -> None:
        self.log("%s %s" % (self.tid, text))

    # -- scenario actions
    def cut(self) -> None:
        if self.agent is not None:
            self.agent.session.drop()

    def outage(self, down_s: float) -> None:
        self.hal.outage_until = self.hal.ticks_ms() + int(down_s * 1000)
        self.cut()

    def reboot(self) -> None:
        if self.agent is not None:
            self.agent.shutdown()
            self.agent = None

    def power_cut(self, down_s: float) -> None:
        """Dead stop: RAM (the open batch) lost, the socket just vanishes, boot after ``down_s``."""
        if self.agent is not None:
            self.agent.session.close(clean=False)
            self.agent.link.close()
            self.agent = None
        self.off_until = self.hal.ticks_ms() + int(down_s * 1000)


def apply_event(term: Terminal, event: Event) -> None:
    """Carry out ``event`` on one terminal. SimError for a request the bus refuses."""
    f = event.fields
    a = event.action
    bus = term.bus
    if a == "set":
        bus.set_value(f["unit"], f["point"], f["value"])
    elif a == "unset":
        bus.clear_value(f["unit"], f.get("point"))
    elif a == "inject":
        bus.inject(f["unit"], f["fault"], **f.get("params", {}))
    elif a == "clear":
        bus.clear(f["unit"], f.get("fault"))
    elif a == "unplug":
        bus.unplug(f["unit"])
    elif a == "plug":
        bus.plug(f["unit"])
    elif a == "cut":
        term.cut()
    elif a == "outage":
        term.outage(f["down"])
    elif a == "reboot":
        term.reboot()
    elif a == "power_cut":
        term.power_cut(f["down"])


# -- one worker process ---------------------------------------------------------------


class WorkerSpec:
    """What a worker needs (picklable): its terminals and the fleet's settings."""

    def __init__(
        self,
        index: int,
        scenario: Scenario,
        numbers: list[int],
        total: int,
        *,
        broker: dict[str, Any],
        passwords: dict[str, str],
        state_dir: str,
        t0: float,
        ca: str | None = None,
        step_ms: int = STEP_MS,
        ramp_s: float = 0.0,
        duration: float = 0.0,
    ) -> None:
        self.index = index
        self.scenario = scenario
        self.numbers = numbers
        self.total = total
        self.broker = broker
        self.passwords = passwords
        self.state_dir = state_dir
        self.t0 = t0  # wall-clock start of the fleet (time.time())
        self.ca = ca
        self.step_ms = step_ms
        self.ramp_s = ramp_s
        self.duration = duration


def prepare_state(spec: WorkerSpec, number: int) -> Path:
    """Write terminal ``number``'s site part, and the scenario's cloud part on first boot."""
    sc = spec.scenario
    tid = sc.tid(number)
    directory = Path(spec.state_dir) / tid
    directory.mkdir(parents=True, exist_ok=True)
    site = sc.site_for(number, spec.broker, spec.passwords[tid])
    _write_json(directory / SITE_FILE, site)
    if sc.cloud and not (directory / CLOUD_FILE).exists():
        # What the cloud's retained config would bring; a later config from
        # a real cloud (higher version) replaces it.
        _write_json(directory / CLOUD_FILE, sc.cloud)
    return directory


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


class Worker:
    """Steps the terminals of one process until ``stop()`` or the duration is over."""

    def __init__(self, spec: WorkerSpec, log: Callable[[str], None]) -> None:
        self.spec = spec
        self.log = log
        sc = spec.scenario
        # One simulated clock per worker: physics time is shared, so all
        # workers agree on it to within their start-up skew.
        self.clock = SimClock(start=spec.t0, speed=sc.speed)
        self.terminals: dict[int, Terminal] = {}
        for n in spec.numbers:
            bus = Bus(self.clock, seed=sc.seed + n, sleep=_no_sleep)
            for d in sc.devices:
                bus.add(d.kind, d.unit, model=d.model, **d.params)
            hal = FleetHal(bus, ca=spec.ca, seed=sc.seed * 100_003 + n)
            self.terminals[n] = Terminal(
                n, sc.tid(n), prepare_state(spec, n), bus, hal=hal, log=log
            )
        mine = set(spec.numbers)
        self.events = [
            (e, [n for n in sc.members(e.group, spec.total) if n in mine]) for e in sc.events
        ]
        self.next_event = 0
        self.steps = 0
        self.lag_max = 0.0
        self.event_errors = 0
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def run(self, report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Step until stopped; ``report(stats)`` about every second. Returns final stats."""
        spec = self.spec
        start = time.monotonic() - (time.time() - spec.t0)  # t0 on the monotonic clock
        end = start + spec.duration if spec.duration > 0 else float("inf")
        heap: list[tuple[float, int]] = []
        count = max(1, len(spec.numbers))
        for i, n in enumerate(spec.numbers):
            # Spread first boots: a real fleet never samples in lockstep.
            heap.append((time.monotonic() + spec.ramp_s * i / count, n))
        heapq.heapify(heap)
        next_report = time.monotonic() + REPORT_S
        while not self._stop:
            now = time.monotonic()
            if now >= end:
                break
            self._events(now - start)
            if now >= next_report:
                report(self.stats(now - start))
                self.lag_max = 0.0
                next_report = now + REPORT_S
            due, n = heap[0]
            if due > now:
                nxt = self._next_event_at(start)
                time.sleep(max(0.0, min(due, next_report, nxt, end) - now))
                continue
            heapq.heappop(heap)
            lag = now - due
            self.lag_max = max(self.lag_max, lag)
            wait = self.terminals[n].step()
            self.steps += 1
            nap = max(wait, spec.step_ms) if wait > 0 else 0
            heapq.heappush(heap, (time.monotonic() + nap / 1000, n))
        for term in self.terminals.values():
            if term.agent is not None:
                term.agent.shutdown()  # the broker publishes each death frame
        return self.stats(time.monotonic() - start)

    def _next_event_at(self, start: float) -> float:
        if self.next_event < len(self.events):
            return start + self.events[self.next_event][0].at
        return float("inf")

    def _events(self, elapsed: float) -> None:
        while self.next_event < len(self.events) and self.events[self.next_event][0].at <= elapsed:
            event, numbers = self.events[self.next_event]
            self.next_event += 1
            for n in numbers:
                try:
                    apply_event(self.terminals[n], event)
                except SimError as err:
                    self.event_errors += 1
                    self.log("event %r on %s failed: %s" % (event, self.terminals[n].tid, err))
            if numbers:
                self.log(
                    "t=%.1f %s %s on %d terminals"
                    % (elapsed, event.action, event.group, len(numbers))
                )

    def stats(self, elapsed: float) -> dict[str, Any]:
        terms = self.terminals.values()
        return {
            "worker": self.spec.index,
            "elapsed": elapsed,
            "terminals": len(self.terminals),
            "powered": sum(1 for t in terms if t.agent is not None),
            "up": sum(1 for t in terms if t.agent is not None and t.agent.session.up),
            "failed": sum(1 for t in terms if t.failed is not None),
            "boots": sum(t.boots for t in terms),
            "sent": sum(t.hal.count_packets() for t in terms),
            "queued": sum(t.agent.outbox.depth for t in terms if t.agent is not None),
            "modbus": sum(t.hal.polls() for t in terms),
            "steps": self.steps,
            "lag_max": self.lag_max,
            "events": self.next_event,
            "event_errors": self.event_errors,
            "cpu": time.process_time(),  # this worker's CPU seconds so far
            "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }


def _no_sleep(seconds: float) -> None:
    """Bus.respond's sleep; unused because the link takes Reply.delay itself."""


def worker_main(spec: WorkerSpec, reports: Any, stop: Any) -> None:
    """Entry point of a worker process (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    raise_fd_limit()
    log_path = Path(spec.state_dir) / ("fleet-%d.log" % spec.index)
    with log_path.open("a", buffering=1) as fh:

        def log(text: str) -> None:
            fh.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))

        worker = Worker(spec, log)

        def report(stats: dict[str, Any]) -> None:
            reports.put(stats)
            if stop.is_set():
                worker.stop()

        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        final = worker.run(report)
        final["final"] = True
        reports.put(final)


def raise_fd_limit() -> None:
    """One socket per terminal: lift the soft descriptor limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the parent ---------------------------------------------------------------------


def split(numbers: list[int], parts: int) -> list[list[int]]:
    """Deal terminal numbers round-robin to ``parts`` workers (groups spread evenly)."""
    return [numbers[k::parts] for k in range(parts) if numbers[k::parts]]


def summarize(per_worker: dict[int, dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for stats in per_worker.values():
        for key, value in stats.items():
            if key in ("worker", "final"):
                continue
            if key in ("elapsed", "lag_max", "events", "cpu", "rss_kb"):
                total[key] = max(total.get(key, 0), value)
            else:
                total[key] = total.get(key, 0) + value
    return total


def progress_line(s: dict[str, Any], events: int) -> str:
    return (
        "t=%5.0fs terminals %d up %d/%d boots %d sent %d queued %d modbus %d "
        "lag %.0fms events %d/%d"
        % (
            s.get("elapsed", 0),
            s.get("terminals", 0),
            s.get("up", 0),
            s.get("powered", 0),
            s.get("boots", 0),
            s.get("sent", 0),
            s.get("queued", 0),
            s.get("modbus", 0),
            1000 * s.get("lag_max", 0),
            s.get("events", 0),
            events,
        )
    )


def run_fleet(
    scenario: Scenario,
    *,
    broker: dict[str, Any],
    passwords: dict[str, str],
    state_dir: Path,
    terminals: int,
    processes: int,
    out: TextIO,
    ca: str | None = None,
    step_ms: int = STEP_MS,
    ramp_s: float = 0.0,
    duration: float | None = None,
    progress_s: float = 5.0,
) -> int:
    """Run the fleet until the duration is over or SIGINT/SIGTERM; return the exit status.

    ``passwords`` maps every terminal id to its broker password. Returns 0,
    or 1 when a worker process died or a terminal could not boot.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    numbers = list(range(1, terminals + 1))
    missing = [scenario.tid(n) for n in numbers if scenario.tid(n) not in passwords]
    if missing:
        raise SimError("no password for %d terminals (first: %s)" % (len(missing), missing[0]))
    run_for = scenario.duration if duration is None else duration
    ctx = multiprocessing.get_context("spawn")
    reports = ctx.Queue()
    stop = ctx.Event()
    t0 = time.time()
    specs = [
        WorkerSpec(
            k,
            scenario,
            part,
            terminals,
            broker=broker,
            passwords=passwords,
            state_dir=str(state_dir),
            t0=t0,
            ca=ca,
            step_ms=step_ms,
            ramp_s=ramp_s,
            duration=run_for,
        )
        for k, part in enumerate(split(numbers, max(1, processes)))
    ]
    procs = [ctx.Process(target=worker_main, args=(s, reports, stop), daemon=True) for s in specs]
    stopping = {"signal": 0}

    def on_signal(signum: int, frame: object) -> None:
        stopping["signal"] = signum
        stop.set()

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    for p in procs:
        p.start()
    print(
        "fleet %s: %d terminals in %d processes, state %s"
        % (scenario.name, terminals, len(procs), state_dir),
        file=out,
        flush=True,
    )
    latest: dict[int, dict[str, Any]] = {}
    finished: set[int] = set()
    next_print = time.monotonic() + progress_s
    try:
        while len(finished) < len(procs):
            try:
                stats = reports.get(timeout=0.5)
                latest[stats["worker"]] = stats
                if stats.get("final"):
                    finished.add(stats["worker"])
            except queue.Empty:
                pass
            if any(not p.is_alive() and k not in finished for k, p in enumerate(procs)):
                # A worker died without its final report (killed, crashed).
                stop.set()
                dead = [k for k, p in enumerate(procs) if not p.is_alive() and k not in finished]
                print("worker %s died" % dead, file=out, flush=True)
                finished.update(dead)
            if time.monotonic() >= next_print and latest:
                total = summarize(latest)
                print(progress_line(total, len(scenario.events)), file=out, flush=True)
                _write_json(state_dir / "fleet-status.json", total)
                next_print = time.monotonic() + progress_s
    finally:
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
        for sig, handler in old.items():
            signal.signal(sig, handler)
    total = summarize(latest)
    _write_json(state_dir / "fleet-status.json", total)
    print(progress_line(total, len(scenario.events)), file=out, flush=True)
    print("stopped", file=out, flush=True)
    bad = any(p.exitcode not in (0, None) for p in procs) or total.get("failed", 0)
    return 1 if bad else 0


# -- command line (python -m firmware_sim fleet / fleet-accounts) --------------------------


def add_parsers(commands: Any) -> None:
    """Add the ``fleet`` and ``fleet-accounts`` subcommands to the CLI's subparsers."""
    p = commands.add_parser(
        "fleet",
        help="run many virtual terminals driven by a scenario file",
        description="Run a fleet of virtual terminals (the real agent, sensors simulated in "
        "process) against an MQTT broker, replaying a scenario timeline. Prints a progress "
        "line every few seconds; SIGINT/SIGTERM stop it (every terminal's death frame fires).",
    )
    p.add_argument(
        "--scenario",
        required=True,
        metavar="FILE",
        help="scenario (.toml or .json), e.g. firmware_sim/scenarios/demo.toml",
    )
    p.add_argument(
        "--broker", required=True, metavar="HOST:PORT", help="the broker's terminal listener"
    )
    creds = p.add_mutually_exclusive_group(required=True)
    creds.add_argument(
        "--accounts",
        metavar="CSV",
        help="username,secret,role lines (as cloud.broker render reads); every "
        "terminal needs a row with its plaintext secret",
    )
    creds.add_argument(
        "--password-file", metavar="FILE", help="one password (first line) for every terminal"
    )
    p.add_argument("--ca", metavar="FILE", help="CA to trust: connect with TLS")
    p.add_argument("--terminals", type=int, help="fleet size (default: the scenario's)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--state-dir",
        required=True,
        metavar="DIR",
        help="flash of every terminal (DIR/<id>/), logs and fleet-status.json",
    )
    p.add_argument(
        "--duration", type=float, help="seconds to run (default: the scenario's; 0 = until stopped)"
    )
    p.add_argument(
        "--step-ms",
        type=int,
        default=STEP_MS,
        help="longest pause between two steps of a terminal (default %(default)s)",
    )
    p.add_argument(
        "--ramp",
        type=float,
        default=5.0,
        metavar="S",
        help="spread first boots over S seconds (default %(default)s)",
    )
    p.add_argument(
        "--progress",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between progress lines (default %(default)s)",
    )
    a = commands.add_parser(
        "fleet-accounts",
        help="write broker accounts for a fleet",
        description="Write username,secret,terminal lines with fresh random secrets for the "
        "fleet's terminal ids: give the file to `python -m cloud.broker render --accounts` "
        "(add the service accounts) and to `fleet --accounts`.",
    )
    a.add_argument("--scenario", required=True, metavar="FILE")
    a.add_argument("--terminals", type=int, help="fleet size (default: the scenario's)")
    a.add_argument("--out", required=True, metavar="CSV")


def read_accounts(path: str) -> dict[str, str]:
    """Terminal id -> plaintext secret from an accounts CSV; SimError when unusable."""
    out: dict[str, str] = {}
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise SimError("%s: %s" % (path, err.strerror or err)) from err
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [x.strip() for x in line.split(",")]
        if len(parts) != 3:
            raise SimError("%s:%d: expected username,secret,role" % (path, i))
        user, secret, role = parts
        if role.lower() != "terminal":
            continue
        if is_password_hash(secret):
            # A hash cannot log in; the runner has to know the secret itself.
            raise SimError(
                "%s:%d: %s has a hashed secret; the fleet needs the plaintext" % (path, i, user)
            )
        out[user] = secret
    return out


def fleet_command(args: Any, out: TextIO) -> int:
    """``fleet``: validate the arguments, then :func:`run_fleet`. SimError for bad input."""
    sc = load(args.scenario)
    terminals = sc.terminals if args.terminals is None else args.terminals
    if not 1 <= terminals <= 100_000:
        raise SimError("--terminals must be 1..100000")
    if not 1 <= args.processes <= 256:
        raise SimError("--processes must be 1..256")
    host, sep, port_text = args.broker.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SimError("--broker %r is not HOST:PORT" % args.broker)
    host, port = host.strip("[]"), int(port_text)
    if args.accounts:
        passwords = read_accounts(args.accounts)
    else:
        try:
            lines = Path(args.password_file).read_text().splitlines()
        except OSError as err:
            raise SimError("%s: %s" % (args.password_file, err.strerror or err)) from err
        if not lines or not lines[0]:
            raise SimError("%s: the first line must be the password" % args.password_file)
        passwords = {sc.tid(n): lines[0] for n in range(1, terminals + 1)}
    broker = {"host": host, "port": port, "tls": args.ca is not None}
    return run_fleet(
        sc,
        broker=broker,
        passwords=passwords,
        state_dir=Path(args.state_dir),
        terminals=terminals,
        processes=args.processes,
        out=out,
        ca=args.ca,
        step_ms=args.step_ms,
        ramp_s=args.ramp,
        duration=args.duration,
        progress_s=args.progress,
    )


def accounts_command(args: Any, out: TextIO) -> int:
    """``fleet-accounts``: a CSV of fresh terminal accounts (mode 0600)."""
    sc = load(args.scenario)
    terminals = sc.terminals if args.terminals is None else args.terminals
    lines = ["# username,secret,role - terminal accounts of fleet %s" % sc.name]
    lines += ["%s,%s,terminal" % (sc.tid(n), new_secret()) for n in range(1, terminals + 1)]
    path = Path(args.out)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("%d terminal accounts written to %s" % (terminals, path), file=out)
    return 0
