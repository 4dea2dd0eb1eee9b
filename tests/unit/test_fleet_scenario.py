"""Scenario files: the shipped ones load, and every kind of mistake is named by its key path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.errors import ScenarioError
from firmware_sim.scenario import load, parse

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "name": "t",
    "terminals": 4,
    "prefix": "FT",
    "site": {"sample": {"interval": 10}},
    "cloud": {
        "upload": 0,
        "thresholds": [{"channel": "leak.ior", "cond": "leak", "warn": 30, "alarm": 50}],
    },
    "device": [
        {"kind": "insulation", "unit": 1, "name": "leak"},
        {"kind": "meter", "unit": 2, "name": "power", "params": {"peak_kw": 100}},
    ],
    "groups": {"two": [2, 3], "tail": "3-4"},
    "event": [
        {"at": 20, "action": "set", "group": "two", "unit": 1, "point": "ior", "value": 35},
        {"at": 5, "action": "inject", "unit": 2, "fault": "crc", "params": {"rate": 0.5}},
        {"at": 30, "action": "power_cut", "group": "tail", "down": 3},
    ],
}


def variant(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(data)
    return str(info.value)


@pytest.mark.parametrize("name", ["demo", "soak"])
def test_shipped_scenarios_load(name: str) -> None:
    sc = load(REPO / "firmware_sim" / "scenarios" / f"{name}.toml")
    assert sc.name == name
    assert sc.events, "a scenario without a timeline"
    # Every event's group exists and hits at least one terminal of the default fleet.
    for event in sc.events:
        assert sc.members(event.group, sc.terminals), event


def test_demo_raises_leakage_on_a_couple_of_terminals_within_two_minutes() -> None:
    sc = load(REPO / "firmware_sim" / "scenarios" / "demo.toml")
    assert 15 <= sc.terminals <= 25
    rule = next(t for t in sc.cloud["thresholds"] if t["channel"] == "leak.ior")
    sets = [e for e in sc.events if e.action == "set" and e.fields["point"] == "ior"]
    warn = next(e for e in sets if rule["warn"] <= e.fields["value"] < rule["alarm"])
    alarm = next(e for e in sets if e.fields["value"] >= rule["alarm"])
    assert warn.at < alarm.at
    assert alarm.at + rule["on_delay"] + sc.site["sample"]["interval"] <= 120
    assert 1 < len(sc.members(alarm.group, sc.terminals)) <= 3
    assert any(
        e.action == "unset" and e.group == alarm.group and e.at > alarm.at for e in sc.events
    ), "no recovery"


def test_parse_builds_ids_groups_sites_and_sorted_events() -> None:
    sc = parse(BASE)
    assert sc.tid(7) == "FT0007"
    assert sc.members("two", 4) == [2, 3]
    assert sc.members("tail", 3) == [3]  # beyond the fleet size: left out
    assert sc.members("all", 3) == [1, 2, 3]
    assert [e.at for e in sc.events] == [5, 20, 30]
    assert sc.cloud["version"] == 1 and sc.cloud["heartbeat"] == 300  # normalized
    site = sc.site_for(2, {"host": "h", "port": 1, "tls": False}, "pw")
    assert site["terminal_id"] == "FT0002"
    assert site["credentials"] == {"username": "FT0002", "password": "pw"}
    assert site["wiring"][0] == {"unit": 1, "profile": "IM-100", "name": "leak"}
    assert site["sample"] == {"interval": 10}


def test_json_and_toml_files(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(BASE))
    assert load(path).terminals == 4
    bad = tmp_path / "s.toml"
    bad.write_text("terminals = [\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load(bad)
    with pytest.raises(ScenarioError, match="cannot read"):
        load(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"terminalz": 3}, "terminalz: unknown key"),
        ({"terminals": 0}, "terminals: must be an integer"),
        ({"prefix": "bad id/"}, "prefix: makes invalid terminal ids"),
        ({"speed": -1}, "speed: must be a number"),
        ({"device": []}, "device: at least one"),
        ({"device": [{"kind": "laser", "unit": 1}]}, "device[0].kind: unknown kind 'laser'"),
        ({"device": [{"kind": "di", "unit": 0}]}, "device[0].unit: must be an integer 1..247"),
        (
            {"device": [{"kind": "di", "unit": 1}, {"kind": "thermo", "unit": 1}]},
            "device[1].unit: unit 1 is used twice",
        ),
        (
            {"device": [{"kind": "thermo", "unit": 3, "params": {"gain": 1}}]},
            "device[0].params.gain: not a parameter of thermo",
        ),
        ({"site": {"terminal_id": "X"}}, "site.terminal_id: set by the fleet runner"),
        ({"site": {"sample": {"interval": 0}}}, "site.sample.interval"),
        (
            {"cloud": {"thresholds": [{"channel": "leak.nope", "cond": "hi", "warn": 1}]}},
            "cloud.thresholds[0].channel: no such channel",
        ),
        ({"groups": {"all": [1]}}, "groups.all: 'all' is built in"),
        ({"groups": {"g": "5-2"}}, "groups.g: range must go up"),
        ({"groups": {"g": "x"}}, "groups.g: must be a list"),
        ({"groups": {"g": [1, 0]}}, "groups.g[1]: must be an integer"),
    ],
)
def test_top_level_mistakes(changes: dict[str, Any], message: str) -> None:
    assert message in error_of(variant(**changes))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"action": "set", "unit": 1, "point": "ior", "value": 1}, "event[0].at: must be a number"),
        ({"at": 1, "action": "explode"}, "event[0].action: unknown action 'explode'"),
        ({"at": 1, "action": "set", "unit": 1, "point": "ior"}, "event[0].value: is required"),
        (
            {"at": 1, "action": "set", "unit": 9, "point": "ior", "value": 1},
            "event[0].unit: no device with unit 9",
        ),
        (
            {"at": 1, "action": "set", "unit": 1, "point": "kw", "value": 1},
            "event[0].point: IM-100 has no point 'kw'",
        ),
        (
            {"at": 1, "action": "inject", "unit": 1, "fault": "gremlins"},
            "event[0].fault: unknown fault 'gremlins'",
        ),
        (
            {"at": 1, "action": "inject", "unit": 1, "fault": "crc", "params": {"rate": 2}},
            "event[0].params:",
        ),
        ({"at": 1, "action": "inject", "unit": 1, "fault": "slow"}, "needs delay_ms"),
        ({"at": 1, "action": "reboot", "group": "nobody"}, "event[0].group: no group 'nobody'"),
        ({"at": 1, "action": "reboot", "unit": 1}, "event[0].unit: unknown key"),
        ({"at": 1, "action": "outage"}, "event[0].down: is required for outage"),
        ({"at": 1, "action": "power_cut", "down": -5}, "event[0].down: must be a number"),
    ],
)
def test_event_mistakes(event: dict[str, Any], message: str) -> None:
    assert message in error_of(variant(event=[event]))
