"""Round trips, CBOR edge encodings and topics under MicroPython (and CPython).

No hypothesis here: a small deterministic generator builds frames of every
type, so the same cases run on both interpreters.
"""

import math

from protocol import cbor, frames, topics
from protocol.errors import ProtocolError
from protocol.limits import MAX_ACK_RANGES, MAX_CHANNELS, MAX_CHUNK, U32_MAX

# canonical encodings as cbor2 writes them (cbor2.dumps(v, canonical=True))
GOLDEN = (
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (255, "18ff"),
    (256, "190100"),
    (65535, "19ffff"),
    (65536, "1a00010000"),
    (4294967295, "1affffffff"),
    (4294967296, "1b0000000100000000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-1, "20"),
    (-24, "37"),
    (-25, "3818"),
    (-256, "38ff"),
    (-257, "390100"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.0, "f93c00"),
    (1.5, "f93e00"),
    (65504.0, "f97bff"),
    (5.960464477539063e-08, "f90001"),
    (6.103515625e-05, "f90400"),
    (100000.0, "fa47c35000"),
    (3.4028234663852886e38, "fa7f7fffff"),
    (1.401298464324817e-45, "fa00000001"),
    (float("inf"), "f97c00"),
    (float("-inf"), "f9fc00"),
    (float("nan"), "f97e00"),
    ("", "60"),
    ("a", "6161"),
    ("é", "62c3a9"),
    ("日", "63e697a5"),
    ("😀", "64f09f9880"),
    (b"", "40"),
    (b"\x00\xff", "4200ff"),
    ([], "80"),
    ([1, [2, 3]], "8201820203"),
    ({}, "a0"),
    ({"b": 1, "a": 2, "aa": 3, 10: 4}, "a40a04616102616201626161" + "03"),
    ({"a": 1, 1000: 2, -1: 3}, "a320036161011903e802"),  # length-first, not bytewise
    (None, "f6"),
    (True, "f5"),
    (False, "f4"),
)
DOUBLE_PORT = (1.0 + 2.0**-52) != 1.0  # ESP32 builds use single-precision floats


def _same(a, b):
    """Equality that tells 1 from 1.0 from True and 0.0 from -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and str(a)[0] == str(b)[0]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(a[i], b[i]) for i in range(len(a)))
    if isinstance(a, dict):
        return len(a) == len(b) and all(k in b and _same(a[k], b[k]) for k in a)
    return a == b


def _reason(fn, arg):
    try:
        fn(arg)
    except ProtocolError as err:
        return err.reason
    raise AssertionError("no ProtocolError for %r" % (arg,))


def test_golden_cbor_encodings():
    for value, hexstr in GOLDEN:
        assert cbor.dumps(value) == bytes.fromhex(hexstr), (value, hexstr)
        back = cbor.loads(bytes.fromhex(hexstr))
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(back)
        else:
            assert back == value and type(back) is type(value), (value, back)


def test_double_precision_follows_the_port():
    if DOUBLE_PORT:
        assert cbor.dumps(0.1) == bytes.fromhex("fb3fb999999999999a")
        assert cbor.loads(bytes.fromhex("fb3fb999999999999a")) == 0.1
    else:
        # a float32 board holds 0.1 as a single and sends it as one
        assert cbor.dumps(0.1) == bytes.fromhex("fa3dcccccd")


def test_every_half_float_reencodes_to_itself():
    for h in range(0x10000):
        raw = bytes((0xF9, h >> 8, h & 0xFF))
        value = cbor.loads(raw)
        if not math.isnan(value):  # all NaN payloads collapse to f97e00, by design
            assert cbor.dumps(value) == raw, h


def test_decode_offset_and_trailing_bytes():
    buf = bytes.fromhex("01820203" + "6161")
    assert cbor.decode(buf) == (1, 1)
    assert cbor.decode(buf, 1) == ([2, 3], 4)
    assert cbor.decode(buf, 4) == ("a", 6)
    assert _reason(cbor.loads, buf) == "trailing_bytes"


def test_strict_utf8_on_this_port():
    # MicroPython's own decoder accepts these; the protocol must not
    for hexstr in ("62c080", "63eda080", "64f4908080", "61ff", "62e697"):
        assert _reason(cbor.loads, bytes.fromhex(hexstr)) == "bad_utf8", hexstr


def _rng(seed):
    """A tiny LCG: returns next(n) -> int in 0..n-1, with its state in a closure."""
    state = [seed]

    def draw(n):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return (state[0] >> 8) % n

    return draw


def _value(draw):
    k = draw(6)
    if k == 0:
        return None
    if k == 1:
        return draw(2**31) - 2**30
    if k == 2:
        return (draw(2**16) - 2**15) / 8.0  # exact in binary, fits float32
    if k == 3:
        return draw(24)
    return draw(1 << draw(33))


def _text(draw, n):
    alphabet = "abcXYZ_09 é日😀"
    return "".join(alphabet[draw(len(alphabet))] for _ in range(1 + draw(n)))


def _tree(draw, depth):
    k = draw(7 if depth < 7 else 4)
    if k == 0:
        return None
    if k == 1:
        return draw(2) == 1
    if k == 2:
        return _value(draw) or 0
    if k == 3:
        return _text(draw, 8)
    if k < 6:
        return [_tree(draw, depth + 1) for _ in range(draw(4))]
    return {_text(draw, 5): _tree(draw, depth + 1) for _ in range(draw(4))}


def _frame(draw, ftype):
    f = {
        "type": ftype,
        "tid": "T%04d" % draw(10000),
        "boot": draw(U32_MAX),
        "seq": draw(1 << draw(33)),
        "ts": 946684800 + draw(2**30),
        "unsynced": draw(2) == 1,
    }
    if ftype == "birth":
        n = draw(MAX_CHANNELS + 1)
        f["fw"] = _text(draw, 10)
        f["cfg"] = draw(100)
        f["channels"] = [
            {
                "alias": i,
                "name": "c%d" % i,
                "unit": _text(draw, 4),
                "kind": frames.KINDS[draw(len(frames.KINDS))],
                "exp": draw(19) - 9,
            }
            for i in range(n)
        ]
    elif ftype == "data":
        samples = []
        for i in range(1 + draw(5)):
            values = [_value(draw) for _ in range(draw(12))]
            while values and values[-1] is None:
                values.pop()
            s = {"dt": draw(100) + (0 if i == 0 else 1), "values": values}
            q = [[a, 1 + draw(3)] for a in range(0, MAX_CHANNELS, 1 + draw(20))]
            if draw(2):
                s["quality"] = q
            samples.append(s)
        f["samples"] = samples
    elif ftype == "alarm":
        f["alias"] = None if draw(3) == 0 else draw(MAX_CHANNELS)
        f["cond"] = ("hi", "lo", "leak", "unreachable", "clock")[draw(5)]
        f["level"] = 1 + draw(2)
        f["state"] = ("raised", "cleared")[draw(2)]
        f["value"] = _value(draw)
        f["threshold"] = _value(draw)
    elif ftype == "status":
        f["uptime"] = draw(2**31)
        f["queued"] = draw(1000)
        f["dropped"] = draw(10)
        f["rssi"] = None if draw(2) else -draw(120)
        f["heap"] = draw(200000)
        f["errors"] = {_text(draw, 12): draw(1000) for _ in range(draw(4))}
    elif ftype == "cfgack":
        f["version"] = draw(1000)
        f["ok"] = draw(2) == 1
        f["reason"] = None if f["ok"] else _text(draw, 40)
    elif ftype == "cmdres":
        f["id"] = draw(2**31)
        f["ok"] = draw(2) == 1
        f["result"] = _tree(draw, 2)
    elif ftype == "config":
        f["version"] = draw(1000)
        f["config"] = {_text(draw, 6): _tree(draw, 3) for _ in range(draw(6))}
    elif ftype == "cmd":
        f["id"] = draw(2**31)
        f["name"] = _text(draw, 10)
        f["args"] = {_text(draw, 6): _tree(draw, 3) for _ in range(draw(3))}
    elif ftype == "ack":
        f["for_boot"] = draw(U32_MAX)
        ranges = []
        first = draw(1 << draw(20))
        for _ in range(1 + draw(MAX_ACK_RANGES)):
            count = 1 + draw(50)
            if first + count - 1 > U32_MAX:
                break
            ranges.append([first, count])
            first += count + 1 + draw(1 << draw(12))
        f["ranges"] = ranges
    elif ftype in ("otareq", "otastat", "chunk"):
        f["job"] = draw(2**31)
        if ftype == "otastat":
            f["state"] = _text(draw, 12) or "x"
            f["done"] = draw(U32_MAX)
            f["total"] = draw(U32_MAX)
            f["reason"] = None if draw(2) else _text(draw, 40)
        else:
            f["path"] = _text(draw, 20) or "p"
            f["off"] = draw(U32_MAX)
            if ftype == "otareq":
                f["len"] = 1 + draw(MAX_CHUNK)
            else:
                f["size"] = draw(U32_MAX)
                f["data"] = bytes(draw(256) for _ in range(draw(300)))
    return f


def test_round_trip_generated_frames_of_every_type():
    draw = _rng(20251127)
    for ftype in sorted(frames.TYPECODES):
        for _ in range(40):
            frame = _frame(draw, ftype)
            buf = frames.encode(frame)
            assert _same(frames.decode(buf), frame), (ftype, buf)
            assert frames.encode(frames.decode(buf)) == buf


def test_head_reads_the_identity_of_every_type():
    draw = _rng(8)
    for ftype in sorted(frames.TYPECODES):
        frame = _frame(draw, ftype)
        buf = frames.encode(frame)
        assert frames.head(buf) == (ftype, frame["tid"], frame["boot"], frame["seq"])
        # a frame whose body is bad still has a readable head (the cloud acks it)
        bad = bytearray(buf)
        bad.append(0)
        bad[0] += 1  # one element more than the type has
        assert frames.head(bytes(bad))[2:] == (frame["boot"], frame["seq"])
    assert _reason(frames.head, b"") == "truncated"
    assert _reason(frames.head, b"\xa1\x01\x02") == "bad_field"  # a map
    assert _reason(frames.head, bytes([0x83, 1, 2, 3])) == "bad_field"  # too short
    assert _reason(frames.head, bytes([0x87, 2, 2]) + bytes(5)) == "bad_version"
    assert _reason(frames.head, bytes([0x87, 1, 9]) + bytes(5)) == "bad_type"
    # a longer array head than needed is accepted, as decode accepts it
    buf = frames.encode(_frame(draw, "death"))
    assert frames.head(b"\x98\x07" + buf[1:])[0] == "death"


def test_ack_ranges_merge_runs_and_acked_finds_them():
    assert frames.ack_ranges([5, 3, 4, 9, 4, 0]) == [[0, 1], [3, 3], [9, 1]]
    assert frames.ack_ranges([]) == []
    assert frames.ack_ranges([U32_MAX - 1, U32_MAX]) == [[U32_MAX - 1, 2]]
    r = frames.ack_ranges([0, 3, 4, 5, 9])
    assert [s for s in range(12) if frames.acked(r, s)] == [0, 3, 4, 5, 9]
    ack = {
        "type": "ack",
        "tid": "T0001",
        "boot": 0,
        "seq": 0,
        "ts": 1764201600,
        "unsynced": False,
        "for_boot": 3,
        "ranges": r,
    }
    assert frames.decode(frames.encode(ack)) == ack
    ack["ranges"] = [[0, 2], [2, 1]]  # touching: the encoder merges, never writes this
    assert _reason(frames.encode, ack) == "bad_field"
    assert topics.parse(topics.downlink("T0001", "ack")) == ("T0001", "down", "ack")


def test_sample_times():
    frame = {"ts": 1000, "samples": [{"dt": 0}, {"dt": 60}, {"dt": 60}]}
    assert frames.sample_times(frame) == [1000, 1060, 1120]


def test_topics():
    t = topics.uplink("T0001", "alarm")
    assert t == "mm/v1/T0001/up/alarm"
    assert topics.parse(t) == ("T0001", "up", "alarm")
    assert topics.parse(topics.downlink("T0001", "config")) == ("T0001", "down", "config")
    assert _reason(topics.parse, "mm/v1/T+1/up/alarm") == "bad_topic"
    frame = {"type": "alarm", "tid": "T0002"}
    try:
        topics.check_frame_topic(t, frame)
    except ProtocolError as err:
        assert err.reason == "tid_mismatch"
    else:
        raise AssertionError("tid mismatch not detected")


def test_errors_carry_reason_and_are_value_errors():
    try:
        frames.decode(b"")
    except ValueError as err:
        assert isinstance(err, ProtocolError)
        assert err.reason == "truncated"
        assert str(err).startswith("truncated")
    else:
        raise AssertionError("empty input decoded")


def test_error_messages_come_from_the_message_table():
    # raised with a key and arguments, shown as text (protocol.messages)
    frame = {"type": "death", "tid": "T0001", "boot": -1, "seq": 0, "ts": 0, "unsynced": False}
    try:
        frames.encode(frame)
    except ProtocolError as err:
        assert err.reason == "bad_field"
        assert err.message == "boot must be an int 0..2**32-1, got -1", err.message
        assert str(err) == "bad_field: " + err.message
        assert repr(err) == "ProtocolError('bad_field: " + err.message + "')", repr(err)
    else:
        raise AssertionError("negative boot encoded")
    err = ProtocolError("too_large", "payload is 9 bytes")  # the text itself
    assert err.message == "payload is 9 bytes"
    assert str(ProtocolError("truncated")) == "truncated"
