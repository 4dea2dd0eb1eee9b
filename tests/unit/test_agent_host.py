"""Host HAL and the virtual terminal's command line (edge/host)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time

import pytest

from edge.bus import Bus, Poller
from edge.host import __main__ as cli
from edge.host.hal import HostHal, NullLink, Reboot, TcpRtuLink, open_sensors
from tests.support.sim import REPO, SimProcess

SITE = {
    "terminal_id": "VT9",
    "broker": {"host": "127.0.0.1", "port": 1, "tls": False},
    "credentials": {"username": "VT9", "password": "secret-pw"},
    "wiring": [{"unit": 1, "profile": "IM-100"}],
}


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.host", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_names_every_option():
    r = run_cli("--help")
    assert r.returncode == 0
    for opt in ("--site", "--state-dir", "--sensors", "--ca", "tcp://HOST:PORT"):
        assert opt in r.stdout


def test_missing_state_dir_is_a_usage_error():
    r = run_cli("--site", "x.json")
    assert r.returncode == 2
    assert "--state-dir" in r.stderr


def test_invalid_site_exits_2_naming_the_key_not_the_password(tmp_path):
    bad = dict(SITE, wiring=[{"unit": 1, "profile": "NOPE-1"}])
    site = tmp_path / "site.json"
    site.write_text(json.dumps(bad))
    r = run_cli("--site", str(site), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2
    assert "site.wiring[0].profile: unknown sensor profile" in r.stderr
    assert "secret-pw" not in r.stderr + r.stdout
    assert not (tmp_path / "state" / "site.json").exists()


def test_unparsable_site_exits_2(tmp_path):
    site = tmp_path / "site.json"
    site.write_text("{not json")
    r = run_cli("--site", str(site), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 2 and "not a JSON site file" in r.stderr


def test_install_site_copies_once_and_atomically(tmp_path):
    src = tmp_path / "site.json"
    src.write_text(json.dumps(SITE))
    state = tmp_path / "state"
    cli.install_site(src, state)
    assert (state / "site.json").read_bytes() == src.read_bytes()
    stamp = (state / "site.json").stat().st_mtime_ns
    cli.install_site(src, state)  # unchanged: not rewritten
    assert (state / "site.json").stat().st_mtime_ns == stamp
    assert not (state / "site.json.tmp").exists()


def test_sigterm_stops_cleanly_while_broker_unreachable(tmp_path):
    src = tmp_path / "site.json"
    src.write_text(json.dumps(SITE))  # port 1: nobody listens
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.host",
            "--site",
            str(src),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    while "connect failed" not in seen:  # it is up and retrying
        left = deadline - time.monotonic()
        assert left > 0 and sel.select(left), "no connect attempt: " + seen
        chunk = os.read(proc.stdout.fileno(), 4096).decode()
        assert chunk, "exited early: " + seen
        seen += chunk
    sel.close()
    proc.terminate()
    out, err = proc.communicate(timeout=20)
    out = seen + out
    assert proc.returncode == 0, err
    assert "boot 1 of VT9" in out and "stopped (signal 15)" in out
    assert (tmp_path / "state" / "boot").read_text().strip() == "1"


def test_open_sensors_choices(tmp_path):
    bus = {"baud": 9600, "parity": "N", "stop": 1}
    assert isinstance(open_sensors(None, bus), NullLink)
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        open_sensors("tcp://nohost", bus)
    with pytest.raises(OSError):
        open_sensors("tcp://127.0.0.1:1", bus)  # nobody listens: fail at start, clearly
    with pytest.raises(OSError):
        open_sensors(str(tmp_path / "no-such-tty"), bus)


def test_null_link_times_out_in_real_time():
    link = NullLink()
    t0 = time.monotonic()
    assert link.read(5, 50) == b""
    assert time.monotonic() - t0 >= 0.045


def test_host_hal_reset_raises_reboot_and_clock_is_the_hosts():
    hal = HostHal(seed=3)
    with pytest.raises(Reboot):
        hal.reset()
    assert abs(hal.ntp_time("pool.ntp.org") - time.time()) < 1
    assert abs(hal.rtc() - time.time()) < 2
    assert all(0 <= hal.random(10) < 10 for _ in range(100))
    assert hal.watchdog(1000).feed() is None


def test_tcp_rtu_link_reads_simulated_sensors_and_reconnects():
    with SimProcess(
        "--tcp",
        "127.0.0.1:0",
        "--device",
        "insulation:1",
        "--device",
        "thermo:3",
        "--speed",
        "0",
        "--seed",
        "7",
    ) as sim:
        host, port = sim.address("tcp")
        link = TcpRtuLink(host, port)
        bus = Bus(link, HostHal.ticks_ms, sleep_ms=HostHal.sleep_ms, timeout_ms=500)
        poller = Poller(
            bus,
            [
                {"name": "leak", "unit": 1, "model": "IM-100"},
                {"name": "th", "unit": 3, "model": "TH-10"},
            ],
        )
        leak, th = poller.poll()
        assert None not in leak and None not in th
        assert 0 < leak[1] < 1000  # Ior in 0.1 mA, a plausible reading
        # the gateway drops the connection: one failed exchange, then it reconnects
        link.close()
        assert bus.read(1, 3, 9000, 1) == [0x1001]  # model code
        assert bus.counters()["link_errors"] == 0
        link.close()
