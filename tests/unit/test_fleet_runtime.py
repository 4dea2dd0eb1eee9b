"""Fleet runner parts without a broker: in-process sensors, virtual waits, terminal life cycle."""

from __future__ import annotations

import io
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from cloud.broker.passwd import hash_password
from edge.bus import Bus as Master
from edge.errors import ModbusTimeout
from firmware_sim import Bus, SimClock
from firmware_sim.cli import main
from firmware_sim.errors import SimError
from firmware_sim.fleet import (
    FleetHal,
    Terminal,
    WorkerSpec,
    apply_event,
    prepare_state,
    read_accounts,
    split,
)
from firmware_sim.scenario import parse

START = 1_780_000_000


def sim_bus() -> Bus:
    bus = Bus(SimClock(start=START, speed=0), seed=3)
    bus.add("insulation", 1)
    return bus


def master(hal: FleetHal, timeout_ms: int = 500, retries: int = 2) -> Master:
    link = hal.open_link({})
    return Master(
        link,
        hal.ticks_ms,
        sleep_ms=hal.sleep_ms,
        ticks_diff=hal.ticks_diff,
        baud=9600,
        timeout_ms=timeout_ms,
        retries=retries,
    )


def test_in_process_sensor_answers_through_the_real_master() -> None:
    bus = sim_bus()
    hal = FleetHal(bus)
    m = master(hal)
    bus.set_value(1, "ior", 35.0)
    assert m.read(1, 4, 0, 3)[1] == 350  # Ior in 0.1 mA
    assert hal.link is not None and hal.link.requests == 1


def test_silence_costs_virtual_time_not_real_time() -> None:
    bus = sim_bus()
    hal = FleetHal(bus)
    m = master(hal, timeout_ms=500, retries=2)
    bus.unplug(1)
    t0, real0 = hal.ticks_ms(), time.monotonic()
    with pytest.raises(ModbusTimeout):
        m.read(1, 4, 0, 3)
    assert hal.ticks_ms() - t0 >= 3 * 500  # three attempts, each waited out in full
    assert time.monotonic() - real0 < 0.2  # ... without blocking the other terminals
    assert m.timeouts == 3 and m.retries == 2  # every attempt counted


def test_slow_reply_arrives_late_or_times_out() -> None:
    bus = sim_bus()
    hal = FleetHal(bus)
    m = master(hal, timeout_ms=300, retries=0)
    bus.inject(1, "slow", delay_ms=120)
    t0 = hal.ticks_ms()
    assert len(m.read(1, 4, 0, 3)) == 3
    assert hal.ticks_ms() - t0 >= 120
    bus.inject(1, "slow", delay_ms=900)
    with pytest.raises(ModbusTimeout):
        m.read(1, 4, 0, 3)


def test_virtual_clock_never_goes_back_and_real_time_catches_up() -> None:
    hal = FleetHal(sim_bus())
    a = hal.ticks_ms()
    hal.sleep_ms(40)
    b = hal.ticks_ms()
    assert b >= a + 40
    deadline = time.monotonic() + 2
    while hal.ticks_ms() <= b + 5:  # real time moves the clock on from there
        assert time.monotonic() < deadline
    assert hal.ticks_ms() >= b


def test_outage_takes_the_network_down_for_its_duration() -> None:
    hal = FleetHal(sim_bus())
    assert hal.network_up()
    hal.outage_until = hal.ticks_ms() + 60_000
    assert not hal.network_up()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SCENARIO = {
    "terminals": 3,
    "prefix": "UT",
    "site": {"sample": {"interval": 1}},
    "cloud": {"upload": 0},
    "device": [{"kind": "insulation", "unit": 1, "name": "leak"}],
    "event": [{"at": 0, "action": "set", "unit": 1, "point": "ior", "value": 44.0}],
}


def make_terminal(tmp_path: Path, number: int = 2) -> Terminal:
    sc = parse(SCENARIO)
    spec = WorkerSpec(
        0,
        sc,
        [number],
        3,
        broker={"host": "127.0.0.1", "port": closed_port(), "tls": False},
        passwords={sc.tid(number): "pw"},
        state_dir=str(tmp_path),
        t0=time.time(),
    )
    bus = sim_bus()
    hal = FleetHal(bus, seed=1)
    lines: list[str] = []
    return Terminal(
        number, sc.tid(number), prepare_state(spec, number), bus, hal=hal, log=lines.append
    )


def boot_count(term: Terminal) -> int:
    return int((term.state_dir / "boot").read_text())


def test_terminal_boots_samples_and_survives_a_missing_broker(tmp_path: Path) -> None:
    term = make_terminal(tmp_path)
    assert (term.state_dir / "cloud.json").exists()  # the scenario's cloud part, seeded
    deadline = time.monotonic() + 5
    while term.hal.link is None or term.hal.link.requests < 2:
        term.step()
        assert time.monotonic() < deadline, "no sampling"
    assert term.agent is not None and not term.agent.session.up
    assert term.agent.session.connect_errors >= 1
    assert term.agent.outbox.depth >= 2  # birth and data kept for later


def test_events_reach_the_sensor_and_the_terminal(tmp_path: Path) -> None:
    sc = parse(SCENARIO)
    term = make_terminal(tmp_path)
    term.step()
    apply_event(term, sc.events[0])
    assert term.bus.device(1).status(START)["overrides"] == {"ior": 44.0}
    assert boot_count(term) == 1
    polls = term.hal.polls()
    assert polls >= 1
    reboot = parse({**SCENARIO, "event": [{"at": 0, "action": "reboot"}]}).events[0]
    apply_event(term, reboot)
    assert term.agent is None
    term.step()
    assert term.agent is not None and boot_count(term) == 2 and term.boots == 2
    assert term.hal.polls() >= polls  # the new boot's link keeps counting on
    cut = parse({**SCENARIO, "event": [{"at": 0, "action": "power_cut", "down": 0.3}]}).events[0]
    apply_event(term, cut)
    term.step()
    assert term.agent is None, "booted while the power was off"
    deadline = time.monotonic() + 3
    while term.agent is None:
        term.step()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert boot_count(term) == 3


def test_read_accounts_takes_plaintext_terminal_secrets(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("# comment\n\nT1,s1,terminal\ningest,x,ingest\nT2, s2 ,TERMINAL\n")
    assert read_accounts(str(path)) == {"T1": "s1", "T2": "s2"}
    path.write_text("T1,%s,terminal\n" % hash_password("s1"))
    with pytest.raises(SimError, match="hashed secret"):
        read_accounts(str(path))
    path.write_text("T1,s1\n")
    with pytest.raises(SimError, match=r"a\.csv:1: expected"):
        read_accounts(str(path))


def test_split_deals_round_robin() -> None:
    assert split([1, 2, 3, 4, 5], 2) == [[1, 3, 5], [2, 4]]
    assert split([1], 4) == [[1]]


def test_cli_rejects_a_bad_scenario_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('terminals = 2\n[[device]]\nkind = "laser"\nunit = 1\n')
    pw = tmp_path / "pw"
    pw.write_text("secret\n")
    code = main(
        [
            "fleet",
            "--scenario",
            str(bad),
            "--broker",
            "127.0.0.1:1",
            "--password-file",
            str(pw),
            "--state-dir",
            str(tmp_path / "s"),
        ]
    )
    assert code == 2
    assert "device[0].kind: unknown kind 'laser'" in capsys.readouterr().err


def test_fleet_accounts_writes_private_fresh_secrets(tmp_path: Path) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('prefix = "AC"\n[[device]]\nkind = "di"\nunit = 4\n')
    out = tmp_path / "acc.csv"
    assert (
        main(
            ["fleet-accounts", "--scenario", str(scenario), "--terminals", "3", "--out", str(out)],
            out=io.StringIO(),
        )
        == 0
    )
    accounts = read_accounts(str(out))
    assert sorted(accounts) == ["AC0001", "AC0002", "AC0003"]
    assert len(set(accounts.values())) == 3
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
