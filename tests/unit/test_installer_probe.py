"""Probe logic on the terminal's Modbus master over the in-process RS-485 line (FakeLink)."""

from __future__ import annotations

from edge import bus, profiles
from edge.installer import probe
from edge.link import FakeLink, FakeSlave


def master(*slaves: FakeSlave, timeout_ms: int = 100) -> tuple[bus.Bus, FakeLink]:
    link = FakeLink(*slaves)
    return bus.Bus(
        link, link.ticks_ms, sleep_ms=link.sleep_ms, timeout_ms=timeout_ms, retries=0
    ), link


def im100(unit: int) -> FakeSlave:
    return FakeSlave(unit, holding={9000: 0x1001, 9001: 0x0102}, inputs={0: 182, 1: 13, 2: 2013})


def test_a_known_model_is_identified_with_a_reading() -> None:
    m, _ = master(im100(3))
    hit = probe.probe_unit(m, profiles.profile_table(), 3)
    assert hit == probe.Found(
        3,
        "model",
        code=0x1001,
        model="IM-100",
        firmware=0x0102,
        reading=["io=18.2 mA", "ior=1.3 mA", "v=201.3 V"],
    )


def test_silence_is_nobody_and_costs_one_timeout() -> None:
    m, link = master(im100(3), timeout_ms=100)
    before = link.ticks_ms()
    assert probe.probe_unit(m, profiles.profile_table(), 4) is None
    assert link.writes == 1
    assert 100 <= link.ticks_ms() - before < 150


def test_an_exception_means_the_unit_exists() -> None:
    dev = FakeSlave(9, holding={9000: 0x1001})
    dev.exception = 4
    m, _ = master(dev)
    hit = probe.probe_unit(m, profiles.profile_table(), 9)
    assert hit is not None and hit.status == "exception"
    assert hit.note == "exception 4 (device failure) for register 9000"


def test_damaged_replies_are_asked_again_then_reported() -> None:
    m, link = master(im100(3))
    link.set_manipulator(lambda reply: reply[:-1] + bytes([reply[-1] ^ 0xFF]))
    hit = probe.probe_unit(m, profiles.profile_table(), 3)
    assert hit is not None and hit.status == "damaged"
    assert hit.note == "replies are damaged (CRC): check the line"
    assert link.writes == probe.DAMAGED_TRIES


def test_one_bad_reply_then_a_good_one_is_a_normal_hit() -> None:
    m, link = master(im100(3))
    hits = []

    def corrupt_first(reply: bytes) -> bytes:
        hits.append(1)
        return reply[:-1] + bytes([reply[-1] ^ 0xFF]) if len(hits) == 1 else reply

    link.set_manipulator(corrupt_first)
    hit = probe.probe_unit(m, profiles.profile_table(), 3)
    assert hit is not None and hit.model == "IM-100"


def test_format_value_applies_the_exponent_and_unit() -> None:
    assert probe.format_value(182, {"exp": -1, "unit": "mA"}) == "18.2 mA"
    assert probe.format_value(-45, {"exp": -1, "unit": "degC"}) == "-4.5 degC"
    assert probe.format_value(917, {"exp": -3, "unit": ""}) == "0.917"
    assert probe.format_value(7, {"exp": 2, "unit": "Wh"}) == "700 Wh"
    assert probe.format_value(1, {"exp": 0, "unit": ""}) == "1"
    assert probe.format_value(21.5, {"exp": 0, "unit": "degC"}) == "21.5 degC"


def test_format_table_aligns_columns() -> None:
    lines = probe.format_table(
        [
            probe.Found(
                1, "model", code=0x1001, model="IM-100", firmware=0x100, reading=["io=1.0 mA"]
            ),
            probe.Found(12, "model", code=0x7777, model="unknown"),
            probe.Found(
                200, "exception", note="exception 2 (illegal data address) for register 9000"
            ),
        ]
    )
    assert lines == [
        "unit  model    code    firmware  reading",
        "   1  IM-100   0x1001  0x0100    io=1.0 mA",
        "  12  unknown  0x7777  -         -",
        " 200  ?        -       -         exception 2 (illegal data address) for register 9000",
    ]
