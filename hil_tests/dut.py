"""The device under test and its sensor bus, as capabilities.

Tests ask the ``dut`` fixture for what they need (``boot``, ``force``,
``unplug``, ``reboot``, ``power_cut_during_outbox_write``,
``set_clock_offset``) and never care which class answers:

- :class:`VirtualDut`: the real agent on the host HAL (``python -m
  edge.host``), sensors on a pty;
- :class:`BoardDut`: a MicroPython board flashed with ``mimamori-install``
  (the bundle built with ``--with-umqtt``, the site, board.json and the
  broker's CA), talking TLS to the broker. Without ``hil_tests/hardware.toml``
  the board is the virtual board (``tools/virtual_board.mjs``: the real
  MicroPython with the ESP32's modules bridged to a pty for the RS-485 bus,
  real TCP/TLS, SNTP from the suite's server); with it, the real board and
  RS-485 adapter the file names. A power cut at an exact flash write needs
  the virtual board; on a real one that capability skips, saying why.

:class:`SensorBus` is the simulated bus (``python -m firmware_sim serve``,
time frozen so values are exact) with its control channel.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.installer.board import Board
from hil_tests.cloud import poll
from hil_tests.hardware import Hardware
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import Control, SimProcess
from tests.support.virtual_board import VirtualBoard
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
    """A virtual terminal (``python -m edge.host``) with its own state directory,
    on the broker's TLS listener like a terminal in the field."""

    kind = "virtual"

    def __init__(self, tid: str, workdir: Path, broker: MosquittoBroker, bus: SensorBus) -> None:
        self.tid = tid
        self.workdir = workdir
        self.broker = broker
        self.bus = bus
        port = broker.ports["terminal_tls"]
        self.site = site_for(tid, port, wiring=WIRING, tls=True, **SITE_EXTRA)
        self.site_port = port
        assert broker.pki is not None
        self.ca = broker.pki.ca
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
        args = ("--ca", str(self.ca), *self.args)
        self.proc = TerminalProcess(self.workdir, self.site, self.bus.endpoint, args=args)
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
    """A MicroPython board flashed with the installer tools: the virtual board,
    or the real one of ``hardware`` (hil_tests/hardware.toml).

    ``bundle``: built with ``mimamori-install build --with-umqtt``. ``ntp_port``:
    the suite's SNTP server, which the virtual board reaches as ``ntp.bench``
    (port 123 routed to it); a real board uses the site's NTP server.
    """

    kind = "board"
    SSID = "hil-bench"
    WLAN_KEY = "hil-bench-key"  # the virtual bench's access point, not a secret

    def __init__(
        self,
        tid: str,
        workdir: Path,
        broker: MosquittoBroker,
        bus: SensorBus,
        *,
        bundle: Path,
        ntp_port: int,
        hardware: Hardware | None = None,
    ) -> None:
        super().__init__(tid, workdir, broker, bus)
        self.hardware = hardware
        self.bundle = bundle
        self.board: VirtualBoard | None = None
        if hardware is None:
            # the board resolves the broker's certificate name to this machine
            self.site["broker"]["host"] = "localhost"
            self.site["clock"] = {"ntp": "ntp.bench"}
            self.board_config: dict[str, Any] = {
                "wlan": {"ssid": self.SSID, "password": self.WLAN_KEY},
                "wlan_wait": 5,
            }
            self.board = VirtualBoard(
                workdir / "flash",
                uarts={2: bus.endpoint},
                wlan=[f"{self.SSID}:{self.WLAN_KEY}"],
                dns={"localhost": HOST, "ntp.bench": "10.0.0.123"},
                routes={"10.0.0.123:123": (HOST, ntp_port)},
            )
            self.port = ""
        else:
            # the board reaches the loopback broker through the suite's forwarder
            self.site["broker"].update(host=hardware.broker_host, port=hardware.broker_port)
            self.site_port = hardware.broker_port
            self.board_config = {}
            self.port = hardware.board_port

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

    def _powered(self) -> None:
        if self.board is not None and not self.board.alive():
            self.board.start()
            self.port = self.board.port

    def boot(self) -> None:
        """Flash the current site (and board.json, the CA) with the installer; its
        reset starts the agent with a new boot count. Powers a virtual board on first."""
        self._powered()
        site_path = self.workdir / "site.json"
        site_path.write_text(json.dumps(self.site))
        args = ["flash", "--port", self.port, "--bundle", str(self.bundle)]
        args += ["--site", str(site_path), "--ca", str(self.ca), "--timeout", "15"]
        if self.board_config:
            board_path = self.workdir / "board.json"
            board_path.write_text(json.dumps(self.board_config))
            args += ["--board-config", str(board_path)]
        if self.hardware is not None:
            args += ["--baud", str(self.hardware.board_baud)]
        self._installer(*args)

    def _repl(self) -> Board:
        baud = self.hardware.board_baud if self.hardware else 115200
        return Board(self.port, baud=baud, timeout=15)

    def stop(self) -> None:
        """Stop the agent as an installer does: Ctrl-C, the board stays at its REPL."""
        if self.board is not None and not self.board.alive():
            return
        with self._repl():
            pass

    def kill(self) -> None:
        if self.board is not None:
            if self.board.alive():
                self.board.power_cut()
                self.board.wait_dead(30)
        else:
            self.stop()

    def reboot(self) -> None:
        """machine.reset(): a hard reset, main.py starts the agent again."""
        with self._repl() as b:
            b.reset()

    def power_cut_during_outbox_write(self, nth: int = 3) -> None:
        """Boot, then cut the power half-way through the ``nth`` flash write to an
        outbox segment (the virtual board's flash tears it). Returns once the
        board is off; :meth:`boot` powers it on again."""
        if self.board is None:
            pytest.skip(
                "real board: a power cut at an exact flash write needs the virtual board's "
                "flash; the virtual board variant covers it"
            )
        self.stop()
        self.board.power_cut(at_write=nth, suffix=".seg")
        self.boot()
        board = self.board
        poll(lambda: not board.alive(), 60, lambda: f"the cut at outbox write {nth}:\n{self.log()}")
        assert board.wait_dead() == -signal.SIGKILL, self.log()

    def set_clock_offset(self, seconds: int) -> None:
        """Set the board's RTC ``seconds`` off over its REPL and restart it with
        no NTP server (site ``clock.ntp`` = ""), as a board whose clock drifted."""
        self.stop()
        self.site = {**self.site, "clock": {"ntp": ""}}
        with self._repl() as b:
            t = time.gmtime(time.time() + seconds)
            b.exec(
                "import machine\nmachine.RTC().datetime((%d, %d, %d, 0, %d, %d, %d, 0))\n"
                % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
            )
        self.boot()

    def log(self) -> str:
        if self.board is None:
            return "(board: see its REPL port)"
        return self.board.console() + "\n--- board ---\n" + self.board.log()

    def close(self) -> None:
        super().close()
        if self.board is not None:
            self.board.stop()
            self.board.close()
