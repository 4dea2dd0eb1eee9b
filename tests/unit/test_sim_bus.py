"""The in-process responder: every model, every fault, checked byte by byte.

Replies are checked with the test's own bitwise CRC and parsed by hand
(tests/support/sim.py), not with the simulator's or pymodbus's code.
"""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from firmware_sim import Bus, ConfigError, FaultError, SimClock
from tests.support.sim import (
    bits,
    crc16_modbus,
    crc_ok,
    join32,
    parse_reply,
    read_request,
    s16,
    with_crc,
    words,
)

JST = dt.timezone(dt.timedelta(hours=9))
START = dt.datetime(2026, 6, 1, 14, 0, tzinfo=JST).timestamp()  # Monday 14:00


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def clock():
    return SimClock(start=START, speed=0)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def bus(clock, sleeps):
    bus = Bus(clock, seed=3, sleep=sleeps)
    bus.add("insulation", 1)
    bus.add("meter", 2)
    bus.add("meter-cdab", 3)
    bus.add("thermo", 4)
    bus.add("di", 5)
    return bus


def test_independent_crc_matches_the_standard_check_value():
    assert crc16_modbus(b"123456789") == 0x4B37
    assert read_request(1, 3, 0, 10) == bytes.fromhex("01030000000ac5cd")


def read(bus, unit, fc, address, count):
    frame = bus.respond(read_request(unit, fc, address, count))
    assert frame is not None, "no reply"
    got_unit, got_fc, data = parse_reply(frame)
    assert (got_unit, got_fc) == (unit, fc), frame.hex()
    return data


def test_every_model_identifies_itself(bus):
    codes = {1: 0x1001, 2: 0x2001, 3: 0x2002, 4: 0x3001, 5: 0x4001}
    for unit, code in codes.items():
        assert words(read(bus, unit, 3, 9000, 2)) == [code, 0x0100]


def test_insulation_monitor_values(bus):
    io, ior, v = words(read(bus, 1, 4, 0, 3))
    assert 0 < ior < 100  # 0.1 mA: under 10 mA when healthy
    assert io >= ior
    assert 1950 < v < 2060  # 0.1 V around 200 V


@pytest.mark.parametrize(("unit", "order"), [(2, "ABCD"), (3, "CDAB")])
def test_power_meter_values_and_word_order(bus, unit, order):
    regs = words(read(bus, unit, 4, 0, 7))
    kw = join32(regs[0], regs[1], order, signed=True) / 100
    kwh = join32(regs[2], regs[3], order, signed=False) / 10
    v, a, pf = regs[4] / 10, regs[5] / 100, s16(regs[6]) / 1000
    assert 30 < kw < 100  # Monday 14:00, 80 kW peak
    assert 10_000 <= kwh <= 50_000
    assert 195 < v < 206
    assert 0.8 < pf <= 1
    assert a == pytest.approx(kw * 1000 / (3**0.5 * v * pf), rel=0.01)
    status = {d["unit"]: d for d in bus.status()}[unit]["values"]
    assert (kw, kwh) == (status["kw"], status["kwh"])


def test_thermo_and_contacts(bus):
    t, rh = words(read(bus, 4, 4, 0, 2))
    assert 0 < s16(t) / 10 < 40
    assert 5 <= rh / 10 <= 99
    contacts = bits(read(bus, 5, 2, 0, 8), 8)
    assert contacts[1] == 1 and contacts[2] == 1  # AHU and lights on, Monday 14:00
    assert contacts[5] == 0 and contacts[7] == 0
    assert bits(read(bus, 5, 2, 2, 1), 1) == [contacts[2]]


def test_values_change_with_simulated_time(bus, clock):
    before = words(read(bus, 2, 4, 0, 4))
    clock.advance(3600)
    after = words(read(bus, 2, 4, 0, 4))
    assert join32(after[2], after[3], "ABCD", False) > join32(before[2], before[3], "ABCD", False)


@pytest.mark.parametrize(
    "case",
    [
        (1, 4, 3, 1, 2),  # beyond the map
        (1, 4, 2, 2, 2),  # range leaves the map
        (1, 3, 0, 1, 2),  # holding registers only at 9000/9001
        (1, 2, 0, 1, 1),  # IM-100 has no discrete inputs
        (5, 4, 0, 1, 1),  # DI-8 has no input registers
        (5, 1, 0, 8, 1),  # nor coils
        (1, 4, 0, 0, 3),  # count 0
        (1, 4, 0, 126, 3),  # count above 125
    ],
)
def test_exception_replies_like_a_real_device(bus, case):
    unit, fc, address, count, code = case
    frame = bus.respond(read_request(unit, fc, address, count))
    assert frame is not None and crc_ok(frame)
    assert frame[:3] == bytes([unit, fc | 0x80, code])
    assert len(frame) == 5


def test_write_requests_are_illegal_functions(bus):
    frame = bus.respond(with_crc(bytes([1, 6, 0, 0, 0, 5])))
    assert frame[:3] == bytes([1, 0x86, 1]) and crc_ok(frame)


@pytest.mark.parametrize(
    "request_bytes",
    [
        read_request(9, 4, 0, 1),  # nobody at unit 9
        read_request(0, 4, 0, 1),  # broadcast: reads get no answer
        read_request(1, 4, 0, 1)[:-1] + b"\x00",  # bad CRC
        b"\x01\x04",  # too short
        b"",
    ],
)
def test_silence(bus, request_bytes):
    assert bus.respond(request_bytes) is None


def test_no_reply_and_clear(bus):
    bus.inject(1, "no_reply")
    assert bus.respond(read_request(1, 4, 0, 3)) is None
    assert bus.respond(read_request(2, 3, 9000, 1)) is not None  # others unaffected
    bus.clear(1, "no_reply")
    assert bus.respond(read_request(1, 4, 0, 3)) is not None


def test_unplug_and_plug_back(bus):
    bus.unplug(4)
    assert bus.respond(read_request(4, 3, 9000, 1)) is None
    bus.plug(4)
    assert words(read(bus, 4, 3, 9000, 1)) == [0x3001]


def test_slow_reply_waits_with_the_injected_sleep(bus, sleeps):
    bus.inject(1, "slow", delay_ms=750)
    reply = bus.handle(read_request(1, 4, 0, 3))
    assert reply.delay == 0.75 and reply.frame is not None
    frame = bus.respond(read_request(1, 4, 0, 3))
    assert sleeps.calls == [0.75]
    assert crc_ok(frame)
    bus.clear(1)
    bus.respond(read_request(1, 4, 0, 3))
    assert sleeps.calls == [0.75]


def test_crc_corruption(bus):
    good = bus.respond(read_request(4, 3, 9000, 2))
    bus.inject(4, "crc")
    bad = bus.respond(read_request(4, 3, 9000, 2))
    assert bad is not None and not crc_ok(bad)
    assert bad[:-2] == good[:-2]  # only the CRC is wrong


def test_wrong_unit_id_with_a_valid_crc(bus):
    bus.inject(2, "wrong_unit")
    frame = bus.respond(read_request(2, 3, 9000, 1))
    assert crc_ok(frame) and frame[0] == 3 and frame[1:5] == bytes([3, 2, 0x20, 0x01])
    bus.inject(2, "wrong_unit", as_unit=77)
    assert bus.respond(read_request(2, 3, 9000, 1))[0] == 77


@pytest.mark.parametrize("code", [2, 4, 6])
def test_exception_fault(bus, code):
    bus.inject(3, "exception", code=code)
    frame = bus.respond(read_request(3, 4, 0, 7))
    assert crc_ok(frame) and frame[:3] == bytes([3, 0x84, code])


def test_stuck_values_do_not_move_with_time(bus, clock):
    bus.inject(2, "stuck")
    first = read(bus, 2, 4, 0, 7)
    clock.advance(6 * 3600)
    assert read(bus, 2, 4, 0, 7) == first
    bus.clear(2, "stuck")
    assert read(bus, 2, 4, 0, 7) != first


def test_stuck_selected_points_only(bus, clock):
    bus.inject(2, "stuck", points=["kwh"])
    first = words(read(bus, 2, 4, 0, 7))
    clock.advance(3 * 3600)
    later = words(read(bus, 2, 4, 0, 7))
    assert later[2:4] == first[2:4] and later[:2] != first[:2]


def test_spikes(bus):
    normal = words(read(bus, 4, 4, 0, 2))
    bus.inject(4, "spikes", rate=1.0, factor=3.0, points=["rh"])
    spiked = words(read(bus, 4, 4, 0, 2))
    assert spiked[0] == normal[0]
    assert spiked[1] == pytest.approx(3 * normal[1], abs=3)


def test_spike_rate_is_repeatable_for_the_same_seed(clock):
    def pattern() -> list[int]:
        bus = Bus(clock, seed=9)
        bus.add("thermo", 1)
        bus.inject(1, "spikes", rate=0.3, factor=5.0, points=["rh"])
        return [words(read(bus, 1, 4, 1, 1))[0] for _ in range(60)]

    first = pattern()
    assert first == pattern()
    spikes = sum(1 for v in first if v > 2 * min(first))
    assert 5 < spikes < 35


def test_set_point_override_forces_ior(bus):
    bus.set_value(1, "ior", 35.0)
    io, ior, _ = words(read(bus, 1, 4, 0, 3))
    assert ior == 350
    assert io >= 350  # Io contains Ior
    bus.clear_value(1, "ior")
    assert words(read(bus, 1, 4, 1, 1))[0] < 100


def kwh(regs: list[int]) -> float:
    return join32(regs[2], regs[3], "ABCD", False) / 10


def test_forced_power_drives_current_and_energy(bus, clock):
    bus.set_value(2, "kw", 150.0)
    start = words(read(bus, 2, 4, 0, 7))
    assert join32(start[0], start[1], "ABCD", True) == 15000
    clock.advance(1800)
    end = words(read(bus, 2, 4, 0, 7))
    assert kwh(end) - kwh(start) == pytest.approx(75.0, abs=0.2)  # 150 kW for half an hour
    v, a, pf = end[4] / 10, end[5] / 100, s16(end[6]) / 1000
    assert a == pytest.approx(150_000 / (3**0.5 * v * pf), rel=0.01)  # current follows
    bus.set_value(2, "kw", 5000.0)
    assert words(read(bus, 2, 4, 5, 1)) == [0xFFFF]  # 0.01 A register saturates at 655.35 A
    bus.clear_value(2)
    clock.advance(1800)
    after = words(read(bus, 2, 4, 0, 7))
    assert 5 < kwh(after) - kwh(end) < 60  # back to the building's own load


def test_contact_override(bus):
    bus.set_value(5, "di6", 1)
    assert bits(read(bus, 5, 2, 0, 8), 8)[5] == 1


def test_insulation_degrades_over_weeks(clock):
    bus = Bus(clock, seed=1)
    bus.add("insulation", 1, degradation=2.0, humidity_gain=0.0)
    first = words(read(bus, 1, 4, 1, 1))[0]
    clock.advance(5 * 7 * 86400)
    later = words(read(bus, 1, 4, 1, 1))[0]
    assert later - first == pytest.approx(100, abs=10)  # +10 mA in 5 weeks, 0.1 mA counts


def test_same_seed_same_replies(clock):
    def replies(seed: int) -> list[bytes]:
        bus = Bus(clock, seed=seed)
        bus.add("meter", 1)
        bus.add("thermo", 2)
        return [bus.respond(read_request(1, 4, 0, 7)), bus.respond(read_request(2, 4, 0, 2))]

    assert replies(4) == replies(4)
    assert replies(4) != replies(5)


def test_bad_requests_raise(bus):
    with pytest.raises(FaultError, match="unknown fault"):
        bus.inject(1, "gremlins")
    with pytest.raises(FaultError, match="delay_ms"):
        bus.inject(1, "slow")
    with pytest.raises(FaultError, match="rate"):
        bus.inject(1, "crc", rate=2)
    with pytest.raises(FaultError, match="no parameter"):
        bus.inject(1, "crc", delay_ms=3)
    with pytest.raises(FaultError, match="no point"):
        bus.set_value(1, "kw", 1.0)
    with pytest.raises(FaultError, match="no point"):
        bus.inject(1, "stuck", points=["kw"])
    with pytest.raises(FaultError, match="number"):
        bus.set_value(1, "ior", "high")
    with pytest.raises(ConfigError, match="no device"):
        bus.inject(42, "crc")
    with pytest.raises(ConfigError, match="already used"):
        bus.add("thermo", 1)
    with pytest.raises(ConfigError, match="unit id"):
        bus.add("thermo", 248)
    with pytest.raises(ConfigError, match="unknown device kind"):
        bus.add("toaster", 9)
    with pytest.raises(ConfigError, match="unknown parameter"):
        bus.add("thermo", 9, peak_kw=3)
    # nothing above changed the bus
    assert all(not d["faults"] and not d["overrides"] for d in bus.status())


def test_status_counts_requests(bus):
    bus.inject(1, "no_reply")
    bus.respond(read_request(1, 4, 0, 1))
    bus.clear(1)
    bus.respond(read_request(1, 4, 0, 1))
    stats = bus.status()[0]["stats"]
    assert stats == {"requests": 2, "replies": 1, "silent": 1, "wrong_baud": 0}


def test_a_model_name_picks_the_physics_and_the_profile(clock):
    bus = Bus(clock, seed=3)
    sdm = bus.add("SDM630", 6)
    xy = bus.add("thermo", 7, model="XY-MD02")
    assert (sdm.kind, sdm.model.name, xy.kind, xy.model.name) == (
        "meter",
        "SDM630",
        "thermo",
        "XY-MD02",
    )
    with pytest.raises(ConfigError, match="cannot simulate SDM630"):
        bus.add("thermo", 8, model="SDM630")
    with pytest.raises(ConfigError, match="no built-in profile 'NOPE'"):
        bus.add("meter", 8, model="NOPE")
    # SDM630 floats, high word first, power in W on the wire
    frame = bus.respond(read_request(6, 4, 52, 2))
    assert crc_ok(frame)
    watts = struct.unpack(">f", frame[3:7])[0]
    status = {d["unit"]: d for d in bus.status()}
    assert watts == pytest.approx(status[6]["values"]["kw"] * 1000, rel=1e-6)
    # XY-MD02 answers only its two data registers
    assert len(parse_reply(bus.respond(read_request(7, 4, 1, 2)))[2]) == 4
    assert parse_reply(bus.respond(read_request(7, 4, 0, 1)))[1:] == (0x84, b"\x02")


def test_devices_serve_their_documented_identification(clock):
    bus = Bus(clock, seed=3)
    bus.add("SDM630", 6, baud=19200)
    bus.add("KM-N1", 9)
    bus.add("XY-MD02", 7)
    # Eastron: own address and baud-rate code as floats (40021, 40029)
    assert struct.unpack(">f", bus.respond(read_request(6, 3, 20, 2))[3:7])[0] == 6.0
    assert struct.unpack(">f", bus.respond(read_request(6, 3, 28, 2))[3:7])[0] == 3.0
    # Omron: the model name in ASCII, the address as a 32-bit integer
    assert bus.respond(read_request(9, 3, 0x2400, 6))[3:15] == b"KM-N1-FLK   "
    assert words(bus.respond(read_request(9, 3, 0x2002, 2))[3:7]) == [0, 9]
    # XY-MD02: address and the baud rate itself
    assert words(bus.respond(read_request(7, 3, 0x0101, 2))[3:7]) == [7, 9600]


def test_a_device_at_another_baud_rate_stays_silent(clock):
    bus = Bus(clock, seed=3)
    bus.add("SDM120", 2)  # factory setting 2400 baud
    bus.add("XY-MD02", 3, baud=19200)
    assert bus.handle(read_request(2, 4, 0, 2), 9600).frame is None
    assert crc_ok(bus.handle(read_request(2, 4, 0, 2), 2400).frame)
    assert bus.handle(read_request(3, 4, 1, 2), 9600).frame is None
    assert crc_ok(bus.handle(read_request(3, 4, 1, 2), 19200).frame)
    assert crc_ok(bus.handle(read_request(3, 4, 1, 2)).frame)  # a link without a rate
    stats = {d["unit"]: d["stats"] for d in bus.status()}
    assert stats[2]["wrong_baud"] == 1 and stats[3]["wrong_baud"] == 1
    with pytest.raises(ConfigError, match="baud"):
        bus.add("thermo", 4, baud=0)


def test_read_device_identification_where_the_profile_has_it(bus):
    # FC 43 / MEI 14, read code 1 (basic), object 0
    frame = bus.respond(with_crc(bytes([1, 0x2B, 0x0E, 0x01, 0x00])))
    assert crc_ok(frame) and frame[1:4] == bytes([0x2B, 0x0E, 0x01])
    count = frame[7]
    objects, i = {}, 8
    for _ in range(count):
        objects[frame[i]] = frame[i + 2 : i + 2 + frame[i + 1]]
        i += 2 + frame[i + 1]
    assert objects == {0: b"mimamori", 1: b"IM-100", 2: b"1.00"}
    # the test power meter has no identification: illegal function
    assert bus.respond(with_crc(bytes([2, 0x2B, 0x0E, 0x01, 0x00])))[1:3] == bytes([0xAB, 1])
