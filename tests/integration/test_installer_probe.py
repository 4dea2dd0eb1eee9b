"""`mimamori-install probe` and `profile check` against simulated sensors on a pty.

The devices come from the project's simulator (``python -m firmware_sim
serve --pty``), each built from its sensor profile, each listening at its
own baud rate (the simulator sees the rate the tool sets on the pty, and a
device at another rate stays silent, as on a real line). Real Modbus RTU
framing end to end; readings forced and faults injected through the
simulator's control channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.installer import run_tool
from tests.support.sim import Control, SimProcess

pytestmark = pytest.mark.integration

# unit: (device spec, the model, the rate it listens at)
BUS = {
    2: ("SDM630:2", "SDM630", 9600),
    3: ("SDM120:3", "SDM120", 2400),  # its factory rate
    4: ("KM-N1:4", "KM-N1", 9600),
    5: ("XY-MD02:5:baud=19200", "XY-MD02", 19200),
    6: ("WS-IO8:6", "WS-IO8", 9600),
    7: ("insulation:7", "IM-100", 9600),
}
FAST = ("--timeout-ms", "50")


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[str, Control]]:
    devices = [a for spec, _, _ in BUS.values() for a in ("--device", spec)]
    with SimProcess(
        "--pty", "--control", "127.0.0.1:0", *devices, "--speed", "0", "--seed", "7"
    ) as proc:
        control = Control(proc.address("control"))
        try:
            yield proc.endpoints["pty"], control
        finally:
            control.close()


@pytest.fixture
def bus(sim: tuple[str, Control]) -> Iterator[tuple[str, Control]]:
    """The module's bus, with every fault and forced value cleared after the test."""
    yield sim
    for unit in BUS:
        sim[1].ok(cmd="clear", unit=unit)
        sim[1].ok(cmd="unset", unit=unit)


def verdicts(out: str) -> dict[int, str]:
    return {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"^unit (\d+) at (\d+ baud: .*)$", out, flags=re.M)
    }


def test_probe_identifies_each_documented_device_at_its_address_and_baud(
    bus: tuple[str, Control], tmp_path: Path
) -> None:
    port, control = bus
    control.ok(cmd="set", unit=2, point="kw", value=42.5)
    control.ok(cmd="set", unit=5, point="t", value=-4.5)
    site = tmp_path / "site.json"
    result = run_tool(
        "probe", "--port", port, "--units", "1-7", "--baud", "9600,19200,2400", *FAST,
        "--site", str(site), "--write", "--choose", "6=WS-IO8",
    )  # fmt: skip
    assert result.status == 0, result.err
    said = verdicts(result.out)
    assert said == {
        2: "9600 baud: SDM630, identified by its identification registers",
        3: "2400 baud: SDM120, identified by its identification registers",
        4: "9600 baud: KM-N1, identified by its identification registers",
        5: "19200 baud: XY-MD02, identified by its identification registers",
        6: "9600 baud: WS-IO8? a guess (from readings only), confirm by hand",
        7: "9600 baud: IM-100 [reference profile], identified by its identification registers",
    }
    # the evidence and a reading of the terminal's own decoding are shown
    assert re.search(
        r"KM-N1 +score +\d+\.\d  model = 'KM-N1-FLK'; address = 4, the unit id", result.out
    )
    assert "FC 43 product code 'IM-100'" in result.out
    assert "kw=42.5 kW" in result.out and "t=-4.5 degC" in result.out
    # the wiring: the units at the bus's rate; the others are named with the reason
    written = json.loads(site.read_text())
    assert written["bus"] == {"baud": 9600, "parity": "N"}
    assert [(w["unit"], w["profile"], w["name"]) for w in written["wiring"]] == [
        (2, "SDM630", "pm2"),
        (4, "KM-N1", "pm4"),
        (6, "WS-IO8", "di6"),
        (7, "IM-100", "leak7"),
    ]
    assert "unit 3 (SDM120) not written: it answers at 2400 baud and the bus runs at 9600" in (
        result.out
    )
    assert "unit 5 (XY-MD02) not written: it answers at 19200 baud" in result.out
    assert "unit 6: WS-IO8, as you chose" in result.out
    assert "not complete yet (no terminal_id, broker, credentials)" in result.out
    assert (site.stat().st_mode & 0o777) == 0o600


def test_a_guess_is_not_written_unless_confirmed(bus: tuple[str, Control], tmp_path: Path) -> None:
    port, _ = bus
    site = tmp_path / "site.json"
    result = run_tool(
        "probe", "--port", port, "--units", "6,7", *FAST, "--site", str(site), "--write"
    )
    assert result.status == 0, result.err
    assert "unit 6 not written: WS-IO8? a guess (from readings only), confirm by hand; " in (
        result.out
    )
    assert "confirm with --choose 6=WS-IO8" in result.out
    assert [w["unit"] for w in json.loads(site.read_text())["wiring"]] == [7]


def test_probe_shows_damaged_lines_and_devices_no_profile_fits(bus: tuple[str, Control]) -> None:
    port, control = bus
    control.ok(cmd="inject", unit=4, fault="crc")
    control.ok(cmd="inject", unit=2, fault="exception", code=4)
    result = run_tool("probe", "--port", port, "--units", "2,4", *FAST)
    assert result.status == 0, result.err
    assert verdicts(result.out) == {
        2: "9600 baud: answers, but no profile fits (unknown device)",
        4: "9600 baud: replies are damaged (CRC): check the line",
    }


def test_probe_of_a_silent_bus_fails_with_a_wiring_hint(bus: tuple[str, Control]) -> None:
    port, _ = bus
    result = run_tool("probe", "--port", port, "--units", "100-102", "--baud", "9600,19200", *FAST)
    assert result.status == 1
    assert re.fullmatch(
        r"mimamori-install probe: error: no unit answered on \S+ at 9600, 19200 baud, N parity "
        r"\(3 ids tried in \d+\.\d s\): check the A/B wiring, termination, baud rate and parity\n",
        result.err,
    )


def test_probe_of_a_missing_port_and_bad_options(tmp_path: Path) -> None:
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
    bad = tmp_path / "BAD.json"
    bad.write_text(
        json.dumps({"model": "BAD", "points": [{"name": "x", "fc": 4, "addr": 0, "type": "u17"}]})
    )
    result = run_tool("probe", "--port", "/dev/null", "--profile", str(bad))
    assert result.status == 2
    assert "BAD.json: profile 'BAD' point 0 'x': 'type' must be one of" in result.err


def test_profile_check_reads_every_point_of_a_live_device(bus: tuple[str, Control]) -> None:
    port, _ = bus
    result = run_tool("profile", "check", "KM-N1", "--port", port, "--unit", "4")
    assert result.status == 0, result.err
    assert result.out.startswith("KM-N1: valid profile, 6 points, 3 identification registers")
    assert "words 4b4d 2d4e 312d 464c 4b20 2020 model = 'KM-N1-FLK'" in " ".join(result.out.split())
    assert re.search(
        r"v +FC3 @0 +s32 ABCD  words 0000 [0-9a-f]{4} +-> \d+\.\d V +plausible \(80\.\.480\)",
        result.out,
    )
    assert "6 of 6 points answered, 6 plausible" in result.out


def test_profile_check_says_which_maps_are_not_published_ones(tmp_path: Path) -> None:
    said = {}
    for model in ("IM-100", "PM-300", "SDM120"):
        result = run_tool("profile", "check", model)
        assert result.status == 0, result.err
        said[model] = result.out.strip()
    assert said["IM-100"] == (
        "IM-100: valid profile, 3 points, 2 identification registers (reference profile: its "
        "register map is not a manufacturer's published map)"
    )
    assert "(test device: an invented map for tests and the demo" in said["PM-300"]
    assert said["SDM120"].endswith("identification registers (documented)")
    own = tmp_path / "XY-OWN.toml"
    own.write_text('model = "XY-OWN"\n[[points]]\nname = "t"\nfc = 4\naddr = 1\ntype = "s16"\n')
    assert run_tool("profile", "check", str(own)).out.strip().endswith("(site profile)")


def test_profile_check_catches_a_site_map_with_the_wrong_scale(
    bus: tuple[str, Control], tmp_path: Path
) -> None:
    port, control = bus
    control.ok(cmd="set", unit=5, point="t", value=21.5)
    wrong = tmp_path / "XY-TENTHS.toml"
    wrong.write_text(
        'model = "XY-TENTHS"\n'
        "[[points]]\n"
        'name = "t"\nfc = 4\naddr = 1\ntype = "s16"\nexp = 1\nunit = "degC"\nkind = "temperature"\n'
    )
    result = run_tool(
        "profile", "check", str(wrong), "--port", port, "--unit", "5", "--baud", "19200"
    )
    assert result.status == 1, result.out
    assert "-> 2150 degC" in result.out and "IMPLAUSIBLE (-40..125)" in result.out
    # the profile file is checked before the port is opened, mistakes named
    wrong.write_text(
        'model = "XY-TENTHS"\n[[points]]\nname = "t"\nfc = 4\naddr = 1\ntype = "s16"\nexpo = 1\n'
    )
    result = run_tool("profile", "check", str(wrong), "--port", port)
    assert result.status == 2
    assert result.err == (
        "mimamori-install profile: error: %s: profile 'XY-TENTHS' point 0 't': unknown key 'expo' "
        "(allowed: name, fc, addr, type, order, exp, unit, kind, label, scale, offset, range)\n"
        % wrong
    )
