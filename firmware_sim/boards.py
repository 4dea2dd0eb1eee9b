"""``python -m firmware_sim boards``: terminals of a scenario as virtual boards.

Where ``fleet`` runs the agent on CPython, each terminal here is the board
build under the real MicroPython (:mod:`firmware_sim.vboard`): its own
simulated bus (``python -m firmware_sim serve --pty`` with the scenario's
devices, wired to the board's UART 2), flashed with ``mimamori-install
flash`` (the bundle, the site, ``board.json`` for the bench Wi-Fi), reset
into the agent; the scenario's cloud part is on its flash from the start, as
the fleet's terminals have it. The scenario's timeline is replayed for the boards' terminal
numbers: sensor events on each board's bus, ``cut``/``outage`` take its Wi-Fi
access point away (and bring it back after ``down``), ``reboot`` presses its
reset button, ``power_cut`` cuts its power and powers it on after ``down``.
The boards' network resolves the site's NTP server to an SNTP server run here
(:mod:`firmware_sim.sntp`), so they keep real time without the internet.
SIGINT/SIGTERM stop the boards (the broker publishes their death frames) and
their buses. Board files: ``STATE_DIR/<terminal id>/`` (flash, console.log).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from edge.config import CLOUD_FILE

from . import scenario as scenarios
from .errors import SimError
from .fleet import read_accounts
from .sntp import SntpServer
from .vboard import ROOT, VirtualBoard

NTP_ADDRESS = "10.0.0.123"  # the NTP server's address on the boards' simulated network
SSID = "demo-site"
WLAN_KEY = "demo-site-key"  # the simulated access point's, not a secret
START_S = 60.0


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "boards",
        help="run terminals of a scenario as virtual MicroPython boards",
        description="Run terminals FIRST..FIRST+COUNT-1 of a scenario as virtual boards: "
        "the board build under real MicroPython, flashed with mimamori-install, each with "
        "its own simulated RS-485 bus; replay the scenario's timeline for them.",
    )
    p.add_argument("--scenario", required=True, metavar="FILE", help="scenario (.toml/.json)")
    p.add_argument("--broker", required=True, metavar="HOST:PORT", help="terminal listener")
    p.add_argument("--accounts", required=True, metavar="CSV", help="username,secret,role lines")
    p.add_argument("--bundle", required=True, metavar="DIR", help="mimamori-install build output")
    p.add_argument("--first", type=int, required=True, help="terminal number of the first board")
    p.add_argument("--count", type=int, default=1, help="boards (default 1)")
    p.add_argument(
        "--total", type=int, help="terminals of the whole fleet, for event groups (default: all)"
    )
    p.add_argument("--state-dir", required=True, metavar="DIR", help="the boards' files")


class Board:
    """One terminal: its bus (a simulator process) and its virtual board."""

    def __init__(self, sc: scenarios.Scenario, number: int, state: Path, ntp_port: int) -> None:
        self.number = number
        self.tid = sc.tid(number)
        self.dir = state / self.tid
        self.dir.mkdir(parents=True, exist_ok=True)
        devices = []
        for d in sc.devices:
            params = {"model": d.model, **d.params}
            spec = "%s:%d:%s" % (d.kind, d.unit, ",".join("%s=%s" % kv for kv in params.items()))
            devices += ["--device", spec]
        cmd = [sys.executable, "-m", "firmware_sim", "serve", "--pty", "--control", "127.0.0.1:0"]
        cmd += [*devices, "--speed", str(sc.speed), "--seed", str(sc.seed + number)]
        with (self.dir / "sensors.log").open("ab") as log:
            self.sim = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        said = _lines(self.sim, ("pty", "control"))
        host, _, port = said["control"].rpartition(":")
        self.control = (host, int(port))
        ntp = str(sc.site.get("clock", {}).get("ntp", "pool.ntp.org"))
        self.board = VirtualBoard(
            self.dir / "flash",
            uarts={2: said["pty"]},
            wlan=[f"{SSID}:{WLAN_KEY}"],
            dns={ntp: NTP_ADDRESS} if ntp else {},
            routes={NTP_ADDRESS + ":123": ("127.0.0.1", ntp_port)},
        )
        self.board.console_path = self.dir / "console.log"
        self.up_at: float | None = None

    def flash(self, site: dict[str, Any], bundle: str, cloud: dict[str, Any]) -> None:
        flash = self.dir / "flash"
        if cloud and not (flash / CLOUD_FILE).exists():
            # What the cloud's retained config would bring, as the fleet's
            # terminals get it; a later config from the cloud replaces it.
            flash.mkdir(parents=True, exist_ok=True)
            (flash / CLOUD_FILE).write_text(json.dumps(cloud))
        self.board.start()
        (self.dir / "site.json").write_text(json.dumps(site))
        (self.dir / "board.json").write_text(
            json.dumps({"wlan": {"ssid": SSID, "password": WLAN_KEY}, "wlan_wait": 5})
        )
        args = ["flash", "--port", self.board.port, "--bundle", bundle]
        args += ["--site", str(self.dir / "site.json"), "--timeout", "15"]
        args += ["--board-config", str(self.dir / "board.json")]
        proc = subprocess.run(
            [sys.executable, "-m", "edge.installer", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise SimError("flashing %s failed: %s" % (self.tid, proc.stderr.strip()))

    def sensors(self, request: dict[str, Any]) -> None:
        with socket.create_connection(self.control, 10) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            reply = json.loads(sock.makefile().readline())
        if not reply.get("ok"):
            raise SimError("%s sensors: %s" % (self.tid, reply.get("error")))

    def apply(self, event: scenarios.Event) -> None:
        f, a = event.fields, event.action
        if a in scenarios.SENSOR_ACTIONS:
            req: dict[str, Any] = {"cmd": a, **{k: v for k, v in f.items() if k != "params"}}
            req.update(f.get("params", {}))
            self.sensors(req)
        elif a in ("cut", "outage"):
            self.board.control(cmd="wlan", up=False)
            self.up_at = time.monotonic() + float(f.get("down", 30))
        elif a == "reboot":
            self.board.control(cmd="reset")
        elif a == "power_cut":
            self.board.power_cut()
            self.board.wait_dead(30)
            time.sleep(float(f.get("down", 5)))  # the power is off: nothing else to do
            self.board.start()

    def tick(self) -> None:
        if self.up_at is not None and time.monotonic() >= self.up_at:
            self.up_at = None
            self.board.control(cmd="wlan", up=True)

    def close(self) -> None:
        self.board.stop()
        self.board.close()
        if self.sim.poll() is None:
            self.sim.send_signal(signal.SIGTERM)
            try:
                self.sim.wait(10)
            except subprocess.TimeoutExpired:
                self.sim.kill()


def _lines(proc: subprocess.Popen[bytes], keys: tuple[str, ...]) -> dict[str, str]:
    """``key value`` lines the simulator prints at start, until all ``keys`` came."""
    assert proc.stdout is not None
    got: dict[str, str] = {}
    deadline = time.monotonic() + START_S
    buf = b""
    while not all(k in got for k in keys):
        left = deadline - time.monotonic()
        ready = select.select([proc.stdout], [], [], max(0.0, left))[0] if left > 0 else []
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            raise SimError("the simulated bus did not start (see its sensors.log)")
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            key, _, value = line.strip().partition(" ")
            if key in keys and value:
                got[key] = value
    return got


def say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def boards_command(args: argparse.Namespace, out: TextIO) -> int:
    sc = scenarios.load(args.scenario)
    host, _, port = args.broker.rpartition(":")
    secrets = read_accounts(args.accounts)
    total = args.total or sc.terminals
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    boards: list[Board] = []
    ntp = SntpServer().__enter__()
    try:
        for n in range(args.first, args.first + args.count):
            b = Board(sc, n, Path(args.state_dir), ntp.port)
            boards.append(b)
            broker = {"host": host, "port": int(port), "tls": False}
            b.flash(sc.site_for(n, broker, secrets[b.tid]), args.bundle, sc.cloud)
            print(
                "board %s on %s, flashed and running" % (b.tid, b.board.port), file=out, flush=True
            )
        say(out, "%d boards running" % len(boards))
        started = time.monotonic()
        timeline = sorted(sc.events, key=lambda e: e.at)
        while not stop["now"]:
            elapsed = time.monotonic() - started
            while timeline and timeline[0].at <= elapsed:
                event = timeline.pop(0)
                members = set(sc.members(event.group, total))
                for b in boards:
                    if b.number in members:
                        b.apply(event)
                        print(
                            "%s: %s %s" % (b.tid, event.action, event.fields), file=out, flush=True
                        )
            for b in boards:
                b.tick()
                if not b.board.alive():
                    raise SimError("board %s stopped (see %s)" % (b.tid, b.board.log_path))
            time.sleep(0.2)
        return 0
    finally:
        for b in boards:
            b.close()
        ntp.__exit__(None, None, None)
