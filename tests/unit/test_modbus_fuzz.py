"""Fuzzing the Modbus master's input side with hypothesis (CPython).

Whatever bytes arrive, the codec raises only its typed errors and the
Poller raises nothing and never reports a value the slave did not send.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge import modbus
from edge.bus import UNREACHABLE, Bus, Poller
from edge.errors import ModbusError
from edge.fakelink import FakeLink, FakeSlave

UNITS = st.integers(0, 255)
FCS = st.sampled_from((1, 2, 3, 4))


def counts(fc: int):
    return st.integers(1, modbus.MAX_BITS if fc <= 2 else modbus.MAX_REGISTERS)


@given(st.binary(max_size=300), UNITS, FCS.flatmap(lambda fc: st.tuples(st.just(fc), counts(fc))))
def test_parse_response_raises_only_typed_errors(buf, unit, fc_count):
    fc, count = fc_count
    try:
        values, used = modbus.parse_response(buf, unit, fc, count)
    except ModbusError:
        return
    # Accepted: it must really be a well-formed reply for this request.
    assert 5 <= used <= len(buf)
    assert buf[0] == unit and buf[1] == fc
    assert modbus.crc16(buf, 0, used) == 0
    assert len(values) == count


def mutations():
    """A well-formed reply, then byte flips, truncation, insertions."""
    return st.tuples(
        st.integers(1, 247),
        st.sampled_from((3, 4)),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
        st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), max_size=4),
        st.integers(0, 300),
        st.binary(max_size=8),
    )


@given(mutations())
def test_mutated_replies_raise_typed_errors_or_decode_exactly(case):
    unit, fc, regs, flips, cut, prefix = case
    frame = bytearray(modbus.build_response(unit, fc, regs))
    for pos, value in flips:
        frame[pos % len(frame)] = value
    data = prefix + bytes(frame[: max(cut, 0)])
    try:
        values, _ = modbus.parse_response(data, unit, fc, len(regs))
    except ModbusError:
        return
    assert len(values) == len(regs)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=30), st.integers(0, 3))
def test_poller_survives_any_bytes_on_the_line(replies, retries):
    """The slave answers with arbitrary bytes; the Poller never raises."""
    slave = FakeSlave(1, inputs={0: 253, 1: 12, 2: 2031})
    link = FakeLink(slave)
    it = iter(replies)

    def arbitrary(reply):
        return next(it, reply)

    link.set_manipulator(arbitrary)
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms, timeout_ms=30, retries=retries)
    poller = Poller(bus, [{"name": "m", "unit": 1, "model": "IM-100"}], down_after=100)
    for _ in range(len(replies)):
        results = poller.poll()
        for got, want in zip(results[0], (253, 12, 2031), strict=True):
            assert got is UNREACHABLE or got == want
        link.sleep_ms(50)
    c = poller.counters()
    assert c["requests"] >= len(replies)
