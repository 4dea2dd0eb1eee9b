"""The device under test and its sensor bus, as capabilities.

Tests ask the ``dut`` fixture for what they need (``boot``, ``force``,
``unplug``, ``reboot``, ``power_cut_during_outbox_write``,
``set_clock_offset``) and never care which class answers:

- :class:`VirtualDut`: the real agent on the host HAL (``python -m
  edge.host``), sensors on a pty;
- :class:`BoardDut`: a MicroPython board flashed with ``mimamori-install``,
  sensors served on the RS-485 adapter named in ``hil_tests/hardware.toml``.
  Faults a board cannot be made to have from here (a power cut at an exact
  flash write, a wrong RTC) skip on the board variant only, saying why.

:class:`SensorBus` is the simulated bus (``python -m firmware_sim serve``,
time frozen so values are exact) with its control channel.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hil_tests.cloud import poll
from hil_tests.hardware import Hardware
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import Control, SimProcess
from tests.support.virtual_terminal import REPO, TerminalProcess, site_for

# The electrical room every scenario monitors: device name -> (sim kind, unit, profile).
DEVICES = {
    "leak1": ("insulation", 1, "IM-100"),
    "pm1": ("meter", 2, "PM-300"),
    "th1": ("thermo", 3, "TH-10"),
    "di": ("di", 4, "DI-8"),
}
WIRING = [
    {"unit": unit, "profile": profile, "name": name}
    for name, (_kind, unit, profile) in DEVICES.items()
]
SITE_EXTRA: dict[str, Any] = {
    "sample": {"interval": 1, "unreachable_after": 2},
    "bus": {"timeout_ms": 200, "retries": 0},
}
SIM_START = "2026-06-01T14:00"  # JST; frozen there (--speed 0)


def split(channel: str) -> tuple[str, int, str]:
    """``"leak1.ior"`` -> (device name, unit id, point)."""
    device, _, point = channel.partition(".")
    return device, DEVICES[device][1], point


def refusing_port(port: int = 0) -> socket.socket:
    """A loopback socket bound to ``port`` (0: any) and not listening: connections
    to it are refused, and nobody else can take the port while it is held."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # the broker's own connections may linger in TIME_WAIT on its ports
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    return sock


class SensorBus:
    """The simulated sensors of :data:`DEVICES` on a pty or a real serial port."""

    def __init__(self, port: str | None = None, baudrate: int = 9600) -> None:
        link = ["--pty"] if port is None else ["--port", port, "--baudrate", str(baudrate)]
        devices = [
            a
            # every device listens at the bus's rate (the simulator honours it)
            for kind_unit in (f"{k}:{u}:baud={baudrate}" for k, u, _ in DEVICES.values())
            for a in ("--device", kind_unit)
        ]
        self.sim = SimProcess(
            *link,
            "--control",
            "127.0.0.1:0",
            *devices,
            "--speed",
            "0",
            "--start",
            SIM_START,
            "--seed",
            "7",
        )
        self.control: Control | None = None
        self.port = port

    def __enter__(self) -> SensorBus:
        self.sim.__enter__()
        self.control = Control(self.sim.address("control"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.control is not None:
            self.control.close()
        self.sim.__exit__(*exc)

    @property
    def endpoint(self) -> str:
        """What the terminal's ``--sensors`` gets: the pty path or the adapter."""
        return self.port or self.sim.endpoints["pty"]

    def _ok(self, **request: Any) -> dict[str, Any]:
        assert self.control is not None
        return self.control.ok(**request)

    def served(self) -> dict[str, float]:
        """Every channel's value as served now (engineering units)."""
        values = {}
        for name, (_kind, unit, _profile) in DEVICES.items():
            for point, value in self._ok(cmd="read", unit=unit)["device"]["values"].items():
                values[f"{name}.{point}"] = value
        return values

    def force(self, channel: str, value: float) -> None:
        _, unit, point = split(channel)
        self._ok(cmd="set", unit=unit, point=point, value=value)

    def release(self, channel: str) -> None:
        _, unit, point = split(channel)
        self._ok(cmd="unset", unit=unit, point=point)

    def unplug(self, device: str) -> None:
        self._ok(cmd="unplug", unit=DEVICES[device][1])

    def plug(self, device: str) -> None:
        self._ok(cmd="plug", unit=DEVICES[device][1])


class VirtualDut:
    """A virtual terminal (``python -m edge.host``) with its own state directory."""

    kind = "virtual"

    def __init__(self, tid: str, workdir: Path, broker: MosquittoBroker, bus: SensorBus) -> None:
        self.tid = tid
        self.workdir = workdir
        self.broker = broker
        self.bus = bus
        self.site = site_for(tid, broker.ports["terminal"], wiring=WIRING, **SITE_EXTRA)
        self.site_port = broker.ports["terminal"]
        self.args: tuple[str, ...] = ()
        self.proc: TerminalProcess | None = None
        self._dead_port: socket.socket | None = None

    # -- sensors (the same on every DUT)
    def force(self, channel: str, value: float) -> None:
        self.bus.force(channel, value)

    def release(self, channel: str) -> None:
        self.bus.release(channel)

    def unplug(self, device: str) -> None:
        self.bus.unplug(device)

    def plug(self, device: str) -> None:
        self.bus.plug(device)

    # -- network
    def set_uplink(self, reachable: bool) -> None:
        """From the next boot on, the broker is (not) reachable: the site points at
        a port that refuses connections, as a terminal whose cellular link is down."""
        if self._dead_port is not None:
            self._dead_port.close()
            self._dead_port = None
        if reachable:
            port = self.site_port
        else:
            self._dead_port = refusing_port()
            port = self._dead_port.getsockname()[1]
        self.site = {**self.site, "broker": {**self.site["broker"], "port": port}}

    # -- power
    def boot(self) -> None:
        """Power on (the boot counter goes up by one)."""
        assert self.proc is None or self.proc.proc is None or self.proc.proc.poll() is not None
        self.proc = TerminalProcess(self.workdir, self.site, self.bus.endpoint, args=self.args)
        self.proc.start()

    def stop(self) -> None:
        """Orderly shutdown (SIGTERM): open batch queued, death frame by the broker."""
        if self.proc is not None and self.proc.proc is not None and self.proc.proc.poll() is None:
            status = self.proc.stop(signal.SIGTERM)
            assert status == 0, f"terminal exit status {status}:\n{self.log()}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop(signal.SIGKILL)

    def reboot(self) -> None:
        self.stop()
        self.boot()

    def power_cut_during_outbox_write(self, nth: int = 3) -> None:
        """Boot, then lose power half-way through the ``nth`` record appended to
        the outbox (the host HAL's outbox crash hook; the process dies with 137).
        Returns once it is dead; :meth:`boot` is the power coming back."""
        self.stop()
        self.args = ("--power-cut-at", str(nth))
        try:
            self.boot()
            assert self.proc is not None and self.proc.proc is not None
            proc = self.proc.proc
            poll(
                lambda: proc.poll() is not None,
                60,
                lambda: f"the power cut at outbox write {nth}:\n{self.log()}",
            )
            assert proc.returncode == 137, f"exit {proc.returncode}:\n{self.log()}"
        finally:
            self.args = ()

    def set_clock_offset(self, seconds: int) -> None:
        """Power-cycle with an RTC ``seconds`` wrong and no NTP server to correct it
        (site ``clock.ntp`` = ""), as a board whose battery-backed clock drifted."""
        self.stop()
        self.site = {**self.site, "clock": {"ntp": ""}}
        self.args = ("--clock-offset", str(seconds))
        self.boot()

    def log(self) -> str:
        return self.proc.log() if self.proc is not None else ""

    def close(self) -> None:
        self.kill()
        if self._dead_port is not None:
            self._dead_port.close()


class BoardDut(VirtualDut):
    """A real board: flashed with the installer tools, reset over its REPL port."""

    kind = "board"

    def __init__(
        self,
        tid: str,
        workdir: Path,
        broker: MosquittoBroker,
        bus: SensorBus,
        *,
        hardware: Hardware,
    ) -> None:
        super().__init__(tid, workdir, broker, bus)
        self.hardware = hardware
        # the board reaches the loopback broker through the suite's forwarder
        self.site = site_for(tid, hardware.broker_port, wiring=WIRING, **SITE_EXTRA)
        self.site_port = hardware.broker_port
        self.site["broker"]["host"] = hardware.broker_host
        self.bundle = workdir / "bundle"
        self._installer("build", "--out", str(self.bundle))

    def _installer(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "edge.installer", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == 0, f"mimamori-install {args[0]}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def boot(self) -> None:
        site_path = self.workdir / "site.json"
        site_path.write_text(json.dumps(self.site))
        # flash resets the board when done: the agent starts with a new boot count
        self._installer(
            "flash",
            "--port",
            self.hardware.board_port,
            "--bundle",
            str(self.bundle),
            "--site",
            str(site_path),
            "--baud",
            str(self.hardware.board_baud),
        )

    def stop(self) -> None:
        """Stop the agent: Ctrl-C at the REPL leaves the board idle."""
        subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", self.hardware.board_port, "exec", "pass"],
            capture_output=True,
            timeout=60,
            check=False,
        )

    def kill(self) -> None:
        self.stop()

    def reboot(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", self.hardware.board_port, "soft-reset"],
            capture_output=True,
            timeout=60,
            check=True,
        )

    def power_cut_during_outbox_write(self, nth: int = 3) -> None:
        pytest.skip(
            "board variant: a power cut at an exact flash write needs the host HAL's "
            "crash hook; the virtual variant covers it"
        )

    def set_clock_offset(self, seconds: int) -> None:
        pytest.skip(
            "board variant: the board's RTC is not set from here; the virtual variant covers it"
        )

    def log(self) -> str:
        return "(board: see its REPL port)"
