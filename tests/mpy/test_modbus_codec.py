"""Modbus RTU codec (edge/modbus.py) against known frames; runs on CPython and MicroPython."""

from edge import modbus
from edge.errors import (
    ConfigError,
    ModbusCRCError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusFrameError,
)


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


def raises(exc_type, fn, *args):
    """Call ``fn(*args)``; return the exception it raised, fail if none or another type."""
    try:
        fn(*args)
    except exc_type as err:
        return err
    raise AssertionError("%s not raised by %r%r" % (exc_type.__name__, fn, args))


# Frames published in the Modbus documentation and widely used references;
# the CRC is the last two bytes, low byte first.
KNOWN_FRAMES = (
    "01 03 00 00 00 0A C5 CD",  # read 10 holding registers from 0 (the vector)
    "01 03 00 00 00 01 84 0A",
    "11 03 00 6B 00 03 76 87",  # Modbus over serial line spec / simplymodbus example
    "11 03 06 AE 41 56 52 43 40 49 AD",  # ... and its reply
    "01 04 00 00 00 01 31 CA",
    "02 07 41 12",  # spec appendix B: CRC of 02 07 is 0x1241
)


def test_crc16_matches_published_frames():
    for text in KNOWN_FRAMES:
        frame = h(text)
        crc = modbus.crc16(frame, 0, len(frame) - 2)
        assert crc & 0xFF == frame[-2] and crc >> 8 == frame[-1], text
        # A frame with its own CRC appended checks to zero: the receiver's shortcut.
        assert modbus.crc16(frame) == 0, text


def test_crc16_works_on_bytearray_memoryview_and_ranges():
    frame = h("01 03 00 00 00 0A")
    assert modbus.crc16(frame) == 0xCDC5
    assert modbus.crc16(bytearray(frame)) == 0xCDC5
    assert modbus.crc16(memoryview(b"xx" + frame), 2) == 0xCDC5
    assert modbus.crc16(b"") == 0xFFFF


def test_build_read_request_for_every_function_code():
    assert modbus.build_read_request(1, 3, 0, 10) == h("01 03 00 00 00 0A C5 CD")
    assert modbus.build_read_request(0x11, 3, 0x6B, 3) == h("11 03 00 6B 00 03 76 87")
    assert modbus.build_read_request(1, 4, 0, 1) == h("01 04 00 00 00 01 31 CA")
    for fc in (1, 2):
        req = modbus.build_read_request(247, fc, 0xFFF0, 16)
        assert req[:6] == bytes((247, fc, 0xFF, 0xF0, 0, 16))
        assert modbus.crc16(req) == 0


def test_write_read_request_fills_a_reused_buffer():
    buf = bytearray(8)
    modbus.write_read_request(buf, 1, 3, 0, 10)
    assert bytes(buf) == h("01 03 00 00 00 0A C5 CD")
    modbus.write_read_request(buf, 0x11, 3, 0x6B, 3)
    assert bytes(buf) == h("11 03 00 6B 00 03 76 87")


def test_request_arguments_out_of_protocol_range_raise_config_error():
    bad = (
        (256, 3, 0, 1),  # unit id is one byte
        (1, 5, 0, 1),  # not a read function code
        (1, 3, 0, 0),
        (1, 3, 0, 126),  # 125 registers max
        (1, 1, 0, 2001),  # 2000 bits max
        (1, 3, 65535, 2),  # runs past the last address
        (1, 3, -1, 1),
    )
    for args in bad:
        err = raises(ConfigError, modbus.build_read_request, *args)
        assert not isinstance(err, ModbusError)  # a bad argument, not a bus failure
    # The limits themselves are legal.
    assert len(modbus.build_read_request(1, 3, 0, 125)) == 8
    assert len(modbus.build_read_request(1, 2, 63536, 2000)) == 8
    assert len(modbus.build_read_request(1, 4, 65535, 1)) == 8


def test_parse_register_reply():
    values, used = modbus.parse_response(h("11 03 06 AE 41 56 52 43 40 49 AD"), 0x11, 3, 3)
    assert values == [0xAE41, 0x5652, 0x4340]
    assert used == 11


def test_parse_reply_ignores_trailing_bytes_and_reports_used():
    frame = modbus.build_response(1, 4, [1, 2])
    values, used = modbus.parse_response(frame + b"\x01\x04", 1, 4, 2)
    assert values == [1, 2]
    assert used == len(frame) == 9


def test_parse_reply_fills_given_list_in_place():
    out = [None] * 5
    values, _ = modbus.parse_response(modbus.build_response(1, 3, [7, 8, 9]), 1, 3, 3, out)
    assert values is out
    assert out == [7, 8, 9, None, None]


def test_parse_bit_reply_lsb_first():
    # FC 2, 10 inputs: 0xCD 0x01 -> 1,0,1,1,0,0,1,1, 1,0
    frame = h("01 02 02 CD 01") + b"\x00\x00"
    crc = modbus.crc16(frame, 0, 5)
    frame = frame[:5] + bytes((crc & 0xFF, crc >> 8))
    values, used = modbus.parse_response(frame, 1, 2, 10)
    assert values == [1, 0, 1, 1, 0, 0, 1, 1, 1, 0]
    assert used == 7


def test_build_response_round_trips_registers_and_bits():
    regs = [0, 1, 0x7FFF, 0x8000, 0xFFFF]
    frame = modbus.build_response(9, 4, regs)
    assert frame[:3] == bytes((9, 4, 10))
    assert modbus.parse_response(frame, 9, 4, 5)[0] == regs
    bits = [1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    frame = modbus.build_response(9, 1, bits)
    assert frame[:3] == bytes((9, 1, 2))
    assert modbus.parse_response(frame, 9, 1, len(bits))[0] == bits


def test_exception_reply_raises_with_its_code():
    frame = modbus.build_exception(1, 3, 2)
    assert frame == h("01 83 02 C0 F1")
    err = raises(ModbusExceptionResponse, modbus.parse_response, frame, 1, 3, 10)
    assert err.code == 2
    assert isinstance(err, ModbusError)


def test_malformed_replies_raise_typed_frame_errors():
    good = modbus.build_response(1, 3, [1, 2])
    cases = (
        (modbus.build_response(2, 3, [1, 2]), "unit"),
        (modbus.build_response(1, 4, [1, 2]), "fc"),
        (modbus.build_response(1, 3, [1, 2, 3]), "count"),
        (good[:-1], "short"),
        (good[:2], "short"),
        (b"", "short"),
    )
    for frame, reason in cases:
        err = raises(ModbusFrameError, modbus.parse_response, frame, 1, 3, 2)
        assert err.reason == reason, (frame, err.reason)


def test_corrupted_reply_raises_crc_error():
    good = bytearray(modbus.build_response(1, 3, [0x1234, 0x5678]))
    for i in range(3, len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        raises(ModbusCRCError, modbus.parse_response, bytes(bad), 1, 3, 2)
    bad_exc = bytearray(modbus.build_exception(1, 3, 4))
    bad_exc[2] = 3
    raises(ModbusCRCError, modbus.parse_response, bytes(bad_exc), 1, 3, 2)


def test_check_reply_says_when_more_bytes_are_needed():
    frame = modbus.build_response(1, 3, [1, 2])
    for n in range(len(frame)):
        assert modbus.check_reply(frame, n, 1, 3, 2) == 0, n
    assert modbus.check_reply(frame, len(frame), 1, 3, 2) == len(frame)
    exc = modbus.build_exception(1, 3, 4)
    assert modbus.check_reply(exc, 4, 1, 3, 2) == 0
    assert modbus.check_reply(exc, 5, 1, 3, 2) == modbus.E_EXCEPTION
    # Wrong unit, function or count are known as soon as their byte is there.
    assert modbus.check_reply(b"\x02", 1, 1, 3, 2) == modbus.E_UNIT
    assert modbus.check_reply(b"\x01\x04", 2, 1, 3, 2) == modbus.E_FUNCTION
    assert modbus.check_reply(b"\x01\x03\x06", 3, 1, 3, 2) == modbus.E_COUNT


def test_reply_length():
    assert modbus.reply_length(3, 10) == 25
    assert modbus.reply_length(4, 125) == 255
    assert modbus.reply_length(2, 8) == 6
    assert modbus.reply_length(1, 9) == 7
    assert modbus.reply_length(1, 2000) == 255


def test_parse_request_decodes_and_checks():
    assert modbus.parse_request(h("11 03 00 6B 00 03 76 87")) == (0x11, 3, 0x6B, 3)
    raises(ModbusCRCError, modbus.parse_request, h("11 03 00 6B 00 03 76 88"))
    raises(ModbusFrameError, modbus.parse_request, h("11 03 00 6B 00 03 76"))
    frame = bytearray(h("11 06 00 6B 00 03"))
    crc = modbus.crc16(frame)
    frame.append(crc & 0xFF)
    frame.append(crc >> 8)
    raises(ModbusFrameError, modbus.parse_request, bytes(frame))
