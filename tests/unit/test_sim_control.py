"""The control channel's protocol, without sockets (execute())."""

from __future__ import annotations

import datetime as dt

import pytest

from firmware_sim import Bus, SimClock
from firmware_sim.control import execute, parse_time
from tests.support.sim import crc_ok, read_request

START = 1_780_000_000.0


@pytest.fixture
def bus():
    bus = Bus(SimClock(start=START, speed=0), seed=2)
    bus.add("insulation", 1)
    bus.add("meter", 2)
    return bus


def test_ping_and_status(bus):
    assert execute(bus, {"cmd": "ping"}) == {"ok": True}
    status = execute(bus, {"cmd": "status"})
    assert status["ok"] and status["time"] == START and status["speed"] == 0
    assert status["iso"].endswith("+09:00")
    assert [d["unit"] for d in status["devices"]] == [1, 2]
    assert set(status["devices"][1]["values"]) == {"kw", "kwh", "v", "a", "pf"}


def test_inject_and_clear(bus):
    reply = execute(bus, {"cmd": "inject", "unit": 1, "fault": "exception", "code": 2})
    assert reply["ok"] and reply["device"]["faults"] == {"exception": {"code": 2, "rate": 1.0}}
    frame = bus.respond(read_request(1, 4, 0, 1))
    assert crc_ok(frame) and frame[1:3] == bytes([0x84, 2])
    assert execute(bus, {"cmd": "clear", "unit": 1})["device"]["faults"] == {}
    assert bus.respond(read_request(1, 4, 0, 1))[1] == 4


def test_wrong_unit_parameter_does_not_clash_with_the_unit_field(bus):
    reply = execute(bus, {"cmd": "inject", "unit": 2, "fault": "wrong_unit", "as_unit": 9})
    assert reply["ok"], reply
    assert bus.respond(read_request(2, 3, 9000, 1))[0] == 9


def test_unplug_plug_set_unset_read(bus):
    assert execute(bus, {"cmd": "unplug", "unit": 1})["ok"]
    assert bus.respond(read_request(1, 4, 0, 1)) is None
    assert execute(bus, {"cmd": "plug", "unit": 1})["ok"]
    assert bus.respond(read_request(1, 4, 0, 1)) is not None
    reply = execute(bus, {"cmd": "set", "unit": 1, "point": "ior", "value": 35.0})
    assert reply["device"]["values"]["ior"] == 35.0
    assert execute(bus, {"cmd": "read", "unit": 1})["device"]["overrides"] == {"ior": 35.0}
    assert execute(bus, {"cmd": "unset", "unit": 1})["device"]["overrides"] == {}


def test_clock_commands(bus):
    reply = execute(bus, {"cmd": "clock", "set": "2026-06-01T08:00:00"})
    expected = dt.datetime(2026, 6, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    assert reply["time"] == expected.timestamp()
    assert execute(bus, {"cmd": "clock", "advance": 90})["time"] == expected.timestamp() + 90
    assert execute(bus, {"cmd": "clock", "speed": 60})["speed"] == 60
    assert execute(bus, {"cmd": "clock", "set": 5.0, "speed": 0})["time"] == 5.0


def test_shutdown_calls_back(bus):
    calls = []
    assert execute(bus, {"cmd": "shutdown"}, lambda: calls.append(1)) == {"ok": True}
    assert calls == [1]


@pytest.mark.parametrize(
    ("request_obj", "message"),
    [
        ([1, 2], "JSON object"),
        ({"cmd": "explode"}, "unknown command"),
        ({"cmd": "inject", "unit": 1}, "needs 'fault'"),
        ({"cmd": "inject", "unit": 1, "fault": "slow"}, "delay_ms"),
        ({"cmd": "inject", "unit": 5, "fault": "crc"}, "no device"),
        ({"cmd": "inject", "unit": [1], "fault": "crc"}, "no device"),
        ({"cmd": "set", "unit": 1, "point": "kw", "value": 1}, "no point"),
        ({"cmd": "set", "unit": 1, "point": "ior"}, "needs 'value'"),
        ({"cmd": "clear", "unit": 1, "fault": "bogus"}, "unknown fault"),
        ({"cmd": "clock", "speed": -1}, "speed"),
        ({"cmd": "clock", "set": "yesterday"}, "ISO 8601"),
        ({"cmd": "clock", "advance": "1h"}, "seconds"),
    ],
)
def test_errors_are_replies_and_change_nothing(bus, request_obj, message):
    before = execute(bus, {"cmd": "status"})
    reply = execute(bus, request_obj)
    assert reply["ok"] is False and message in reply["error"]
    assert execute(bus, {"cmd": "status"}) == before


def test_parse_time():
    assert parse_time(12) == 12.0
    assert parse_time("2026-01-01T00:00:00+00:00") == 1767225600.0
    assert parse_time("2026-01-01T09:00:00") == 1767225600.0  # naive = JST
