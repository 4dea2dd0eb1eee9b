"""Modbus master (edge/bus.py Bus) on the FakeLink: timing, retries, resync, faults.

Runs on CPython and MicroPython. The slave is edge.fakelink.FakeSlave; faults come
from FakeLink.set_manipulator; time is the FakeLink's virtual clock.
"""

from edge import bus as busmod
from edge import modbus
from edge.bus import Bus
from edge.errors import (
    ConfigError,
    ModbusCRCError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from edge.fakelink import FakeLink, FakeSlave
from edge.link import silence_us

REGS = {0: 0x1234, 1: 0xFFFF, 2: 0, 3: 42, 4: 7, 9000: 0x1001}


def make(baud=9600, timeout_ms=100, retries=1, **slave_tables):
    tables = slave_tables or {"inputs": REGS, "holding": REGS}
    slave = FakeSlave(1, **tables)
    link = FakeLink(slave, baud=baud)
    bus = Bus(
        link,
        link.ticks_ms,
        sleep_ms=link.sleep_ms,
        baud=baud,
        timeout_ms=timeout_ms,
        retries=retries,
    )
    return link, slave, bus


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as err:
        return err
    raise AssertionError("%s not raised" % exc_type.__name__)


def test_reads_registers_and_bits():
    _link, slave, bus = make(discrete={0: 1, 1: 0, 2: 1}, inputs=REGS)
    assert bus.read(1, 4, 0, 5) == [0x1234, 0xFFFF, 0, 42, 7]
    assert bus.read(1, 2, 0, 3) == [1, 0, 1]
    assert bus.requests == 2 and bus.replies == 2
    assert slave.requests == 2
    assert bus.timeouts == bus.retries == bus.discarded == 0


def test_silence_t35_from_baud_rate():
    # 3.5 characters of 11 bits; fixed 1750 us above 19200 baud (spec 2.5.1.1).
    assert silence_us(9600) == 4011
    assert silence_us(19200) == 2006
    assert silence_us(38400) == 1750
    assert silence_us(115200) == 1750
    for baud in (1200, 9600, 19200, 38400, 115200):
        link, _, bus = make(baud=baud)
        for _ in range(5):
            assert bus.read(1, 3, 0, 2) == [0x1234, 0xFFFF]
        assert link.silence_violations == 0, baud
        assert link.min_silence_us >= silence_us(baud), (baud, link.min_silence_us)
        # ... without wasting more than 2 ms of bus time per request on it.
        assert link.min_silence_us <= silence_us(baud) + 2000, (baud, link.min_silence_us)


def test_exception_reply_is_an_answer_not_retried():
    _link, slave, bus = make()
    err = raises(ModbusExceptionResponse, bus.read, 1, 4, 100, 1)  # unmapped: code 2
    assert err.code == 2
    assert slave.requests == 1 and bus.retries == 0
    assert bus.exceptions == 1
    slave.exception = 4
    assert raises(ModbusExceptionResponse, bus.read, 1, 4, 0, 1).code == 4


def test_unsupported_function_gets_exception_1():
    _link, _slave, bus = make(inputs=REGS)
    assert raises(ModbusExceptionResponse, bus.read, 1, 3, 0, 1).code == 1


def test_timeout_retries_then_raises_and_costs_bounded_time():
    link, slave, bus = make(timeout_ms=100, retries=2)
    slave.dead = True
    t0 = link.ticks_ms()
    raises(ModbusTimeout, bus.read, 1, 4, 0, 5)
    spent = link.ticks_ms() - t0
    assert slave.requests == 3
    assert bus.timeouts == 3 and bus.retries == 2 and bus.requests == 3
    # Per attempt: t3.5 wait + request on the wire + timeout + reply time (15 bytes).
    per_attempt = 6 + 10 + 100 + 18
    assert 3 * 100 <= spent <= 3 * per_attempt, spent


def test_crc_error_is_retried_and_counted():
    link, _slave, bus = make()
    hits = [0]

    def corrupt_first(reply):
        hits[0] += 1
        if hits[0] == 1:
            bad = bytearray(reply)
            bad[3] ^= 0xFF
            return bytes(bad)
        return reply

    link.set_manipulator(corrupt_first)
    assert bus.read(1, 4, 0, 2) == [0x1234, 0xFFFF]
    assert bus.crc_errors == 1 and bus.retries == 1 and bus.requests == 2


def test_crc_error_fails_fast_not_at_the_deadline():
    link, _slave, bus = make(timeout_ms=500, retries=0)

    def corrupt(reply):
        bad = bytearray(reply)
        bad[-1] ^= 1
        return bytes(bad)

    link.set_manipulator(corrupt)
    t0 = link.ticks_ms()
    raises(ModbusCRCError, bus.read, 1, 4, 0, 2)
    assert link.ticks_ms() - t0 < 100


def test_leading_garbage_is_skipped_and_counted():
    link, _slave, bus = make()
    link.set_manipulator(lambda r: [b"\x00\xff\x01\x55", r])
    assert bus.read(1, 4, 0, 3) == [0x1234, 0xFFFF, 0]
    assert bus.discarded == 4
    assert bus.retries == 0 and bus.frame_errors == 0


def test_reply_of_another_unit_is_discarded_before_ours():
    link, _slave, bus = make()
    other = modbus.build_response(2, 4, [0x0101, 0x0304, 0x0103])
    link.set_manipulator(lambda r: [other, r])
    assert bus.read(1, 4, 0, 3) == [0x1234, 0xFFFF, 0]
    assert bus.discarded == len(other)


def test_wrong_unit_only_is_a_frame_error():
    link, _slave, bus = make(retries=1)
    link.set_manipulator(lambda r: modbus.build_response(2, 4, [1, 2, 3]))
    err = raises(ModbusFrameError, bus.read, 1, 4, 0, 3)
    assert err.reason == "unit"
    assert bus.frame_errors == 2 and bus.retries == 1 and bus.timeouts == 0


def test_wrong_function_and_count_are_frame_errors():
    link, _slave, bus = make(retries=0)
    link.set_manipulator(lambda r: modbus.build_response(1, 3, [1, 2, 3]))
    assert raises(ModbusFrameError, bus.read, 1, 4, 0, 3).reason == "fc"
    link.set_manipulator(lambda r: modbus.build_response(1, 4, [1, 2]))
    assert raises(ModbusFrameError, bus.read, 1, 4, 0, 3).reason == "count"


def test_short_frame_is_a_frame_error():
    link, _slave, bus = make(retries=0)
    link.set_manipulator(lambda r: r[:-3])
    assert raises(ModbusFrameError, bus.read, 1, 4, 0, 3).reason == "short"


def test_split_reply_with_pause_inside_deadline_is_read():
    link, _slave, bus = make(timeout_ms=100)
    link.set_manipulator(lambda r: [r[:2], 40, r[2:5], 30, r[5:]])
    assert bus.read(1, 4, 0, 3) == [0x1234, 0xFFFF, 0]
    assert bus.retries == 0


def test_late_reply_times_out_and_is_not_taken_for_the_next_answer():
    link, _slave, bus = make(timeout_ms=100, retries=0)
    # The first reply leaves 150 ms late; the next request asks for other
    # registers of the same unit and must get its own, not the stale frame.
    link.set_manipulator(lambda r: [150, r])
    raises(ModbusTimeout, bus.read, 1, 4, 0, 1)
    link.set_manipulator(None)
    link.sleep_ms(100)  # the late frame has arrived by now
    assert bus.read(1, 4, 3, 1) == [42]
    assert link.flushed >= 1


def test_late_reply_still_on_the_line_is_waited_out_not_talked_over():
    link, _slave, bus = make(timeout_ms=100, retries=0)
    link.set_manipulator(lambda r: [110, r])
    raises(ModbusTimeout, bus.read, 1, 4, 0, 1)
    link.set_manipulator(None)
    # Ask again at once: the stale frame (0x1234, exactly our shape) is
    # arriving. The master hears it during the t3.5 wait, discards it, waits
    # for silence and only then sends, so there is no collision on the line
    # and the answer is the fresh one.
    assert bus.read(1, 4, 3, 1) == [42]
    assert link.collisions == 0
    assert link.silence_violations == 0
    assert bus.discarded + link.flushed == 7


def test_reply_delayed_past_timeout_plus_wire_time_is_a_timeout():
    link, _slave, bus = make(timeout_ms=100, retries=0)
    link.set_manipulator(lambda r: [200, r])
    raises(ModbusTimeout, bus.read, 1, 4, 0, 1)
    assert bus.timeouts == 1


def test_long_reply_gets_its_wire_time_on_top_of_the_timeout():
    # 125 registers at 9600 baud take about 290 ms on the wire, more than the
    # timeout; the deadline covers the reply that started in time.
    regs = {}
    for a in range(125):
        regs[a] = a
    _link, _slave, bus = make(timeout_ms=50, retries=0, inputs=regs)
    assert bus.read(1, 4, 0, 125) == list(range(125))


def test_dropped_reply_is_a_timeout():
    link, _slave, bus = make(retries=0)
    link.set_manipulator(lambda r: None)
    raises(ModbusTimeout, bus.read, 1, 4, 0, 1)


def test_noise_injected_between_exchanges_is_flushed():
    link, _slave, bus = make()
    assert bus.read(1, 4, 0, 1) == [0x1234]
    link.inject(b"\x01\x04\x02\x99\x99\x00\x00")  # arrives now, before the next request
    link.sleep_ms(20)
    assert bus.read(1, 4, 0, 1) == [0x1234]
    assert link.flushed == 7


def test_link_oserror_is_counted_and_raised_as_modbus_error():
    class Broken(FakeLink):
        def write(self, buf):
            raise OSError(5)

    link = Broken()
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms)
    err = raises(ModbusError, bus.read, 1, 3, 0, 1)
    assert not isinstance(err, ModbusTimeout)
    assert bus.link_errors == 2  # first try and one retry
    out = [0]
    assert bus.transfer(1, 3, 0, 1, out, retries=0) == busmod.LINK


def test_bus_settings_are_checked():
    link = FakeLink()
    for kwargs in ({"baud": 0}, {"timeout_ms": 0}, {"retries": -1}, {"retries": 99}):
        try:
            Bus(link, link.ticks_ms, **kwargs)
        except ConfigError:
            continue
        raise AssertionError("accepted %r" % kwargs)
    _, _, bus = make()
    raises(ConfigError, bus.read, 1, 3, 0, 126)


def test_counters_dict_has_every_counter():
    _link, _slave, bus = make()
    bus.read(1, 4, 0, 1)
    c = bus.counters()
    for key in (
        "requests",
        "replies",
        "retries",
        "timeouts",
        "crc_errors",
        "frame_errors",
        "exceptions",
        "link_errors",
        "discarded",
    ):
        assert key in c, key
    assert c["requests"] == 1 and c["replies"] == 1


def test_fake_link_timing_follows_the_baud_rate():
    # 8 request bytes + 3 ms turnaround + 7 reply bytes at 9600 8N1 (1.042 ms/char).
    slave = FakeSlave(1, inputs={0: 1})
    link = FakeLink(slave, baud=9600, turnaround_ms=3)
    link.write(modbus.build_read_request(1, 4, 0, 1))
    assert link.now_us == 8 * 1042
    assert link.read(7, 1000) == modbus.build_response(1, 4, [1])
    assert link.now_us == 15 * 1042 + 3000
    # Nothing more is coming: a read waits out its timeout and returns short.
    assert link.read(1, 50) == b""
    assert link.now_us == 15 * 1042 + 3000 + 50000
