"""`mimamori-install probe` against simulated sensors on a pty.

Known models come from the project's simulator (``python -m firmware_sim
serve --pty``), driven through its control channel to force readings and
inject faults. A model the terminal does not know is served by an
in-process responder on a pty of our own (the simulator only has known
models).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from edge.link import FakeSlave
from tests.support.installer import ROOT, run_tool

pytestmark = pytest.mark.integration


@dataclass
class Sim:
    port: str
    control: tuple[str, int]

    def command(self, **cmd: object) -> dict:
        with socket.create_connection(self.control, timeout=10) as sock:
            sock.sendall(json.dumps(cmd).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                assert chunk, "control channel closed"
                reply += chunk
        answer = json.loads(reply)
        assert answer["ok"], answer
        return answer


@pytest.fixture
def sim() -> Iterator[Sim]:
    cmd = [
        sys.executable,
        "-m",
        "firmware_sim",
        "serve",
        "--pty",
        "--control",
        "127.0.0.1:0",
        "--device",
        "insulation:1",
        "--device",
        "meter:2",
        "--device",
        "meter-cdab:7",
        "--device",
        "thermo:30",
        "--device",
        "di:247",
        "--speed",
        "0",
        "--seed",
        "7",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    info: dict[str, str] = {}
    deadline = time.monotonic() + 30
    buf = b""
    try:
        while "ready" not in info:
            left = deadline - time.monotonic()
            assert left > 0, "firmware_sim did not start"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
            assert chunk, (
                "firmware_sim exited: %s" % proc.stderr.read().decode() if proc.stderr else ""
            )
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                key, _, value = line.decode().partition(" ")
                info[key] = value
        host, _, port = info["control"].rpartition(":")
        yield Sim(info["pty"], (host, int(port)))
    finally:
        proc.terminate()
        proc.wait(10)


def test_probe_identifies_every_simulated_model(sim: Sim) -> None:
    sim.command(cmd="set", unit=1, point="ior", value=35.0)
    sim.command(cmd="set", unit=7, point="kw", value=123.45)  # PM-310: low word first
    sim.command(cmd="set", unit=30, point="t", value=-4.5)
    result = run_tool("probe", "--port", sim.port, "--units", "1-3,7,30,247")
    assert result.status == 0, result.err
    table = result.out[result.out.index("unit  model") :].splitlines()
    assert table[0].split() == ["unit", "model", "code", "firmware", "reading"]
    rows = {int(line.split()[0]): line for line in table[1:]}
    assert sorted(rows) == [1, 2, 7, 30, 247]
    assert rows[1].split()[1:4] == ["IM-100", "0x1001", "0x0100"]
    assert "ior=35.0 mA" in rows[1] and re.search(r"io=\d+\.\d mA", rows[1])
    assert rows[2].split()[1:3] == ["PM-300", "0x2001"]
    assert re.search(
        r"kw=\d+\.\d\d kW  kwh=\d+\.\d kWh  v=\d+\.\d V  a=\d+\.\d\d A  pf=0\.\d{3}", rows[2]
    )
    assert rows[7].split()[1:3] == ["PM-310", "0x2002"] and "kw=123.45 kW" in rows[7]
    assert rows[30].split()[1:3] == ["TH-10", "0x3001"] and "t=-4.5 degC" in rows[30]
    assert rows[247].split()[1:3] == ["DI-8", "0x4001"]
    assert re.search(r"(di\d=[01]  ){7}di8=[01]$", rows[247])
    assert "unit 30: TH-10 (0x3001)" in result.out  # progress as units are found
    assert "6 ids tried in" in result.out


def test_probe_lists_units_that_answer_with_an_exception_or_damaged_replies(sim: Sim) -> None:
    sim.command(cmd="inject", unit=2, fault="exception", code=2)
    sim.command(cmd="inject", unit=30, fault="crc")
    result = run_tool("probe", "--port", sim.port, "--units", "1,2,30")
    assert result.status == 0, result.err
    rows = {
        int(line.split()[0]): line
        for line in result.out.splitlines()
        if re.match(r"^ +\d+  ", line)
    }
    assert sorted(rows) == [1, 2, 30]
    assert "exception 2 (illegal data address) for register 9000" in rows[2]
    assert "replies are damaged (CRC): check the line" in rows[30]


def test_probe_of_a_silent_bus_fails_with_a_wiring_hint(sim: Sim) -> None:
    result = run_tool("probe", "--port", sim.port, "--units", "100-104", "--timeout-ms", "50")
    assert result.status == 1
    assert re.fullmatch(
        r"mimamori-install probe: error: no unit answered on \S+ at 9600 baud, N parity \(5 ids "
        r"tried in \d+\.\d s\): check the A/B wiring, termination, baud rate and parity\n",
        result.err,
    )


def test_probe_of_a_missing_port_and_bad_options() -> None:
    result = run_tool("probe", "--port", "/dev/ttyUSB9-nonexistent")
    assert (result.status, result.err) == (
        1,
        "mimamori-install probe: error: no such port /dev/ttyUSB9-nonexistent\n",
    )
    result = run_tool("probe", "--port", "/dev/null", "--units", "0-5")
    assert result.status == 2 and "ids 1..247" in result.err
    result = run_tool("probe", "--port", "/dev/null", "--timeout-ms", "5")
    assert result.status == 2 and "5 is out of range 10..10000" in result.err
    result = run_tool("probe", "--port", "/dev/null", "--units", "1")
    assert (result.status, result.err) == (
        1,
        "mimamori-install probe: error: cannot open /dev/null: not a serial port\n",
    )


def serve_pty(
    slaves: list[FakeSlave], stop: threading.Event
) -> tuple[str, list[int], threading.Thread]:
    """An RS-485 bus of FakeSlaves behind a pty; returns (tty path, fds to close, thread).

    The slave side stays open here too, so the master never reads as hung
    up before the tool opens the port.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)

    def run() -> None:
        buf = b""
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(master, 256)
            except OSError:
                return
            while len(buf) >= 8:  # every read request is 8 bytes
                request, buf = buf[:8], buf[8:]
                for s in slaves:
                    reply = s(request)
                    if reply is not None:
                        os.write(master, reply)
                        break

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return path, [master, slave], thread


def test_probe_shows_an_unknown_model_code() -> None:
    stop = threading.Event()
    slaves = [
        FakeSlave(5, holding={9000: 0x7777, 9001: 0x0203}),
        FakeSlave(6, holding={9000: 0x1001}),
    ]
    path, fds, thread = serve_pty(slaves, stop)
    try:
        result = run_tool("probe", "--port", path, "--units", "4-6")
    finally:
        stop.set()
        thread.join(5)
        for fd in fds:
            os.close(fd)
    assert result.status == 0, result.err
    rows = {
        int(line.split()[0]): line.split()
        for line in result.out.splitlines()
        if re.match(r"^ +\d+  ", line)
    }
    assert rows[5] == ["5", "unknown", "0x7777", "0x0203", "-"]
    # no firmware register, and its input registers are missing: still listed
    assert rows[6][:4] == ["6", "IM-100", "0x1001", "-"]
    assert "io=exception 1" in " ".join(rows[6])
