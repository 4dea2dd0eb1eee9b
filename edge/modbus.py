"""Modbus RTU codec: pure functions, bytes in, values out, no I/O.

Only what a polling master needs: read coils (FC 1), discrete inputs (FC 2),
holding registers (FC 3) and input registers (FC 4), the slave side of those
frames for fakes and simulators, and the value of a point from the registers
it spans (:func:`decode_point`; a sensor profile says which, see
:mod:`edge.profiles`). Timing, retries and resynchronisation live in
:mod:`edge.bus`; this module never waits and never keeps state.

Request (master -> slave), always 8 bytes::

    +------+----+---------+---------+--------+
    | unit | fc | addr    | count   | crc    |
    |  1   | 1  | 2 (BE)  | 2 (BE)  | 2 (LE) |
    +------+----+---------+---------+--------+

Normal reply, ``5 + N`` bytes::

    +------+----+-----------+--------------+--------+
    | unit | fc | bytes = N | data: N      | crc    |
    +------+----+-----------+--------------+--------+
    FC 3/4: N = 2 * count, each register big-endian
    FC 1/2: N = ceil(count / 8), first bit = LSB of the first data byte

Exception reply, 5 bytes::

    +------+-----------+------+--------+
    | unit | fc | 0x80 | code | crc    |
    +------+-----------+------+--------+

The CRC is CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF) over every
byte before it, sent low byte first: ``01 03 00 00 00 0A`` -> ``C5 CD``.
"""

import struct

from edge.errors import (
    ConfigError,
    ModbusCRCError,
    ModbusExceptionResponse,
    ModbusFrameError,
)

READ_COILS = 1
READ_DISCRETE_INPUTS = 2
READ_HOLDING_REGISTERS = 3
READ_INPUT_REGISTERS = 4
FUNCTION_CODES = (1, 2, 3, 4)

MAX_REGISTERS = 125  # 250 data bytes: the spec's limit for FC 3/4
MAX_BITS = 2000  # 250 data bytes: the spec's limit for FC 1/2
MAX_FRAME = 256  # RTU ADU limit
REQUEST_LENGTH = 8
EXCEPTION_LENGTH = 5
MIN_REPLY = 5  # an exception reply is the shortest frame a master can get

# Point types, by their code: the index in edge.profiles.TYPES (u16 s16 u32
# s32 f32 bit) that edge.profiles.plan_reads puts in a read plan's items.
T_U16 = 0
T_S16 = 1
T_U32 = 2
T_S32 = 3
T_F32 = 4
T_BIT = 5

# check_reply() results below zero; above zero is the length of a good frame
# and zero means "not enough bytes yet to decide".
E_UNIT = -1
E_FUNCTION = -2
E_COUNT = -3
E_CRC = -4
E_EXCEPTION = -5

_CRC_LO = (
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x01\xc0\x80\x41\x00\xc1\x81\x40\x00\xc1\x81\x40\x01\xc0\x80\x41"
    b"\x00\xc1\x81\x40\x01\xc0\x80\x41\x01\xc0\x80\x41\x00\xc1\x81\x40"
)

_CRC_HI = (
    b"\x00\xc0\xc1\x01\xc3\x03\x02\xc2\xc6\x06\x07\xc7\x05\xc5\xc4\x04"
    b"\xcc\x0c\x0d\xcd\x0f\xcf\xce\x0e\x0a\xca\xcb\x0b\xc9\x09\x08\xc8"
    b"\xd8\x18\x19\xd9\x1b\xdb\xda\x1a\x1e\xde\xdf\x1f\xdd\x1d\x1c\xdc"
    b"\x14\xd4\xd5\x15\xd7\x17\x16\xd6\xd2\x12\x13\xd3\x11\xd1\xd0\x10"
    b"\xf0\x30\x31\xf1\x33\xf3\xf2\x32\x36\xf6\xf7\x37\xf5\x35\x34\xf4"
    b"\x3c\xfc\xfd\x3d\xff\x3f\x3e\xfe\xfa\x3a\x3b\xfb\x39\xf9\xf8\x38"
    b"\x28\xe8\xe9\x29\xeb\x2b\x2a\xea\xee\x2e\x2f\xef\x2d\xed\xec\x2c"
    b"\xe4\x24\x25\xe5\x27\xe7\xe6\x26\x22\xe2\xe3\x23\xe1\x21\x20\xe0"
    b"\xa0\x60\x61\xa1\x63\xa3\xa2\x62\x66\xa6\xa7\x67\xa5\x65\x64\xa4"
    b"\x6c\xac\xad\x6d\xaf\x6f\x6e\xae\xaa\x6a\x6b\xab\x69\xa9\xa8\x68"
    b"\x78\xb8\xb9\x79\xbb\x7b\x7a\xba\xbe\x7e\x7f\xbf\x7d\xbd\xbc\x7c"
    b"\xb4\x74\x75\xb5\x77\xb7\xb6\x76\x72\xb2\xb3\x73\xb1\x71\x70\xb0"
    b"\x50\x90\x91\x51\x93\x53\x52\x92\x96\x56\x57\x97\x55\x95\x94\x54"
    b"\x9c\x5c\x5d\x9d\x5f\x9f\x9e\x5e\x5a\x9a\x9b\x5b\x99\x59\x58\x98"
    b"\x88\x48\x49\x89\x4b\x8b\x8a\x4a\x4e\x8e\x8f\x4f\x8d\x4d\x4c\x8c"
    b"\x44\x84\x85\x45\x87\x47\x46\x86\x82\x42\x43\x83\x41\x81\x80\x40"
)


def crc16(buf, start=0, end=-1):
    """CRC-16/MODBUS of ``buf[start:end]`` (``end`` -1 means ``len(buf)``).

    The low byte of the result is sent first. Works on bytes, bytearray and
    memoryview without copying.
    """
    if end < 0:
        end = len(buf)
    lo = _CRC_LO
    hi = _CRC_HI
    crc = 0xFFFF
    for i in range(start, end):
        j = (crc ^ buf[i]) & 0xFF
        crc = (crc >> 8) ^ (hi[j] << 8 | lo[j])
    return crc


def _check_read_args(unit, fc, addr, count):
    if not 0 <= unit <= 255:
        raise ConfigError("modbus unit id %r out of range 0..255" % (unit,))
    if fc not in FUNCTION_CODES:
        raise ConfigError("unsupported modbus function code %r" % (fc,))
    limit = MAX_BITS if fc <= READ_DISCRETE_INPUTS else MAX_REGISTERS
    if not 1 <= count <= limit:
        raise ConfigError("modbus count %r out of range 1..%d for fc %d" % (count, limit, fc))
    if not 0 <= addr or addr + count > 0x10000:
        raise ConfigError("modbus address range %r+%r beyond 65535" % (addr, count))


def data_length(fc, count):
    """Data bytes N of a normal reply to a read of ``count`` items."""
    if fc <= READ_DISCRETE_INPUTS:
        return (count + 7) >> 3
    return count << 1


def reply_length(fc, count):
    """Total length of a normal reply to a read of ``count`` items."""
    return 5 + data_length(fc, count)


def write_read_request(buf, unit, fc, addr, count):
    """Write the 8-byte request into ``buf`` (a bytearray, len >= 8); no allocation.

    Raises ConfigError for a unit, function code, address or count the
    protocol cannot express.
    """
    _check_read_args(unit, fc, addr, count)
    buf[0] = unit
    buf[1] = fc
    buf[2] = addr >> 8
    buf[3] = addr & 0xFF
    buf[4] = count >> 8
    buf[5] = count & 0xFF
    crc = crc16(buf, 0, 6)
    buf[6] = crc & 0xFF
    buf[7] = crc >> 8


def build_read_request(unit, fc, addr, count):
    """The 8-byte RTU request frame as bytes; see :func:`write_read_request`."""
    buf = bytearray(REQUEST_LENGTH)
    write_read_request(buf, unit, fc, addr, count)
    return bytes(buf)


def check_reply(buf, have, unit, fc, count):
    """Classify the reply candidate in ``buf[0:have]`` without raising.

    Returns the frame length (> 0) when a complete, CRC-correct normal reply
    starts at ``buf[0]``; 0 when the bytes so far are a valid prefix and more
    are needed; otherwise one of the negative ``E_*`` codes. ``E_EXCEPTION``
    means a complete, CRC-correct exception reply (its code is ``buf[2]``).
    Only bytes up to the frame's own length are looked at, so trailing bytes
    never make a good frame bad. ``buf`` may be a larger reusable buffer.
    """
    if have < 1:
        return 0
    if buf[0] != unit:
        return E_UNIT
    if have < 2:
        return 0
    got_fc = buf[1]
    if got_fc == fc | 0x80:
        need = EXCEPTION_LENGTH
    elif got_fc == fc:
        if have < 3:
            return 0
        n = data_length(fc, count)
        if buf[2] != n:
            return E_COUNT
        need = 5 + n
    else:
        return E_FUNCTION
    if have < need:
        return 0
    crc = crc16(buf, 0, need - 2)
    if buf[need - 2] != crc & 0xFF or buf[need - 1] != crc >> 8:
        return E_CRC
    if need == EXCEPTION_LENGTH:
        return E_EXCEPTION
    return need


def decode_into(buf, fc, count, out):
    """Decode the data of a checked reply at ``buf[0]`` into ``out[0:count]``.

    Registers become ints 0..65535, bits become 0 or 1. ``out`` is a list
    of at least ``count`` items; nothing is allocated.
    """
    p = 3
    if fc <= READ_DISCRETE_INPUTS:
        for i in range(count):
            out[i] = (buf[p + (i >> 3)] >> (i & 7)) & 1
    else:
        for i in range(count):
            out[i] = buf[p] << 8 | buf[p + 1]
            p += 2


def parse_response(buf, unit, fc, count, out=None):
    """Decode the reply that starts at ``buf[0]`` -> ``(values, used)``.

    ``values`` is a list of ``count`` ints (``out`` when given, filled in
    place); ``used`` is the frame length, bytes after it are not looked at.

    Raises, all subclasses of ModbusError:
      ModbusFrameError("unit")  first byte is not ``unit``
      ModbusFrameError("fc")    function code is neither ``fc`` nor ``fc|0x80``
      ModbusFrameError("count") byte count does not match ``count``
      ModbusFrameError("short") the buffer ends before the frame does
      ModbusCRCError            CRC mismatch
      ModbusExceptionResponse(code) a well-formed exception reply
    """
    r = check_reply(buf, len(buf), unit, fc, count)
    if r == 0:
        raise ModbusFrameError("short")
    if r == E_UNIT:
        raise ModbusFrameError("unit")
    if r == E_FUNCTION:
        raise ModbusFrameError("fc")
    if r == E_COUNT:
        raise ModbusFrameError("count")
    if r == E_CRC:
        raise ModbusCRCError("modbus reply CRC mismatch")
    if r == E_EXCEPTION:
        raise ModbusExceptionResponse(buf[2])
    if out is None:
        out = [0] * count
    decode_into(buf, fc, count, out)
    return out, r


# -- slave side: used by fakes, simulators and tests ------------------------


def _with_crc(frame):
    crc = crc16(frame)
    frame.append(crc & 0xFF)
    frame.append(crc >> 8)
    return bytes(frame)


def parse_request(buf):
    """Decode an 8-byte read request -> ``(unit, fc, addr, count)``.

    Raises ModbusFrameError("short") for fewer than 8 bytes,
    ModbusCRCError for a bad CRC, ModbusFrameError("fc") for a function
    code other than 1..4. Address and count are returned as sent, even when
    out of range: answering with exception 2 or 3 is the slave's decision.
    """
    if len(buf) < REQUEST_LENGTH:
        raise ModbusFrameError("short")
    crc = crc16(buf, 0, 6)
    if buf[6] != crc & 0xFF or buf[7] != crc >> 8:
        raise ModbusCRCError("modbus request CRC mismatch")
    if buf[1] not in FUNCTION_CODES:
        raise ModbusFrameError("fc")
    return buf[0], buf[1], buf[2] << 8 | buf[3], buf[4] << 8 | buf[5]


def build_response(unit, fc, values):
    """A normal read reply carrying ``values`` (registers or 0/1 bits)."""
    count = len(values)
    frame = bytearray(3 + data_length(fc, count))
    frame[0] = unit
    frame[1] = fc
    frame[2] = len(frame) - 3
    if fc <= READ_DISCRETE_INPUTS:
        for i in range(count):
            if values[i]:
                frame[3 + (i >> 3)] |= 1 << (i & 7)
    else:
        for i in range(count):
            v = values[i]
            frame[3 + 2 * i] = (v >> 8) & 0xFF
            frame[4 + 2 * i] = v & 0xFF
    return _with_crc(frame)


def build_exception(unit, fc, code):
    """An exception reply: function code with the high bit set, one code byte."""
    return _with_crc(bytearray((unit, fc | 0x80, code)))


# -- values of points -------------------------------------------------------


def _swap(w):
    return (w & 0xFF) << 8 | w >> 8


def decode_point(item, regs):
    """The value of one planned point (an item of :func:`edge.profiles.plan_reads`)
    from the words (or bits) of its request.

    Integer types give ints (raw counts; apply the point's ``exp`` to get
    engineering units), ``f32`` gives a float, a scaled point gives
    ``raw * scale + offset`` as a float. Never raises for any 16-bit input.
    """
    t = item[1]
    o = item[2]
    v = regs[o]
    if t == T_S16:
        if v & 0x8000:
            v -= 0x10000
    elif t >= T_U32 and t != T_BIT:
        a = v
        b = regs[o + 1]
        order = item[3]
        if order == 1:
            a, b = b, a
        elif order == 2:
            a = _swap(a)
            b = _swap(b)
        elif order == 3:
            a, b = _swap(b), _swap(a)
        v = a << 16 | b
        if t == T_S32 and v & 0x80000000:
            v -= 0x100000000
        elif t == T_F32:
            v = struct.unpack(">f", struct.pack(">I", v))[0]
    scale = item[4]
    if scale is not None:
        return v * scale + item[5]
    return v
