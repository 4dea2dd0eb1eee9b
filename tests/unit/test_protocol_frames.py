"""Frame dicts <-> bytes: round trips for every type, the wire layout, validation."""

import copy

import cbor2
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import frames
from protocol.errors import ProtocolError
from protocol.limits import MAX_CHANNELS, MAX_FRAME_BYTES, MAX_SAMPLES
from tests.support.protocol import cloud_decode, frames_of, same

TS = 1764201600


def base(ftype="data", **fields):
    f = {"type": ftype, "tid": "T0001", "boot": 3, "seq": 42, "ts": TS, "unsynced": False}
    f.update(fields)
    return f


def data(*values, **kw):
    return base("data", samples=[{"dt": 0, "values": list(values)}], **kw)


def _encoded_or_skip(frame):
    try:
        return frames.encode(frame)
    except ProtocolError as err:
        # the strategies may build frames beyond MAX_FRAME_BYTES; nothing else may fail
        assert err.reason == "too_large", err
        assume(False)
        raise


def _reason(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.reason


@pytest.mark.parametrize("ftype", sorted(frames.TYPECODES))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_type(ftype, data):
    frame = data.draw(frames_of(ftype))
    buf = _encoded_or_skip(frame)
    assert len(buf) <= MAX_FRAME_BYTES
    assert same(frames.decode(buf), frame)
    # the cloud's path: cbor2 for bytes, the same validation, the same bytes
    assert cbor2.dumps(frames.to_obj(frame), canonical=True) == buf
    assert same(frames.from_obj(cbor2.loads(buf)), frame)
    assert same(cloud_decode(buf), frame)


def test_wire_layout_of_each_type():
    chans = [{"alias": 0, "name": "io", "unit": "mA", "kind": "leak", "exp": -1}]
    head = [1, None, "T0001", 3, 42, TS, 0]
    cases = [
        (
            base("birth", fw="1.0", cfg=2, channels=chans),
            1,
            ["1.0", 2, [[0, "io", "mA", "leak", -1]]],
        ),
        (
            base(
                "data",
                samples=[
                    {"dt": 0, "values": [None, 5]},
                    {"dt": 60, "values": [6], "quality": [[0, 2], [3, 1]]},
                ],
            ),
            2,
            [[[0, [None, 5]], [60, [6], [0, 2, 3, 1]]]],
        ),
        (
            base(
                "alarm",
                alias=None,
                cond="clock",
                level=1,
                state="cleared",
                value=None,
                threshold=2.5,
            ),
            3,
            [None, "clock", 1, 0, None, 2.5],
        ),
        (
            base("status", uptime=9, queued=1, dropped=0, rssi=-70, heap=100, errors={"crc": 1}),
            4,
            [9, 1, 0, -70, 100, {"crc": 1}],
        ),
        (base("cfgack", version=4, ok=False, reason="no"), 5, [4, False, "no"]),
        (base("cmdres", id=3, ok=True, result=[1, "a"]), 6, [3, True, [1, "a"]]),
        (base("death"), 7, []),
        (base("config", version=4, config={"a": 1}), 16, [4, {"a": 1}]),
        (base("cmd", id=5, name="reboot", args={}), 17, [5, "reboot", {}]),
        (base("ack", for_boot=2, ranges=[[0, 3], [9, 1]]), 18, [2, [0, 3, 9, 1]]),
        (base("otareq", job=7, path="edge/a.mpy", off=0, len=2048), 8, [7, "edge/a.mpy", 0, 2048]),
        (
            base("otastat", job=7, state="downloading", done=10, total=99, reason=None),
            10,
            [7, "downloading", 10, 99, None],
        ),
        (
            base("chunk", job=7, path="main.py", off=4, size=6, data=b"ab"),
            19,
            [7, "main.py", 4, 6, b"ab"],
        ),
    ]
    assert sorted(c[1] for c in cases) == sorted(frames.TYPECODES.values())
    for frame, code, tail in cases:
        want = list(head)
        want[1] = code
        assert frames.to_obj(frame) == want + tail, frame["type"]
        assert frames.decode(frames.encode(frame)) == frame


def test_unsynced_is_flag_bit_zero_and_reserved_bits_are_ignored():
    assert frames.to_obj(data(1, unsynced=True))[6] == 1
    obj = frames.to_obj(data(1))
    obj[6] = 0xFE
    assert frames.from_obj(obj)["unsynced"] is False
    obj[6] = 0xFF
    assert frames.from_obj(obj)["unsynced"] is True


def test_trailing_nones_are_dropped_on_the_wire_only():
    frame = data(1, None, 2, None, None)
    assert frames.to_obj(frame)[7] == [[0, [1, None, 2]]]
    assert frames.decode(frames.encode(frame))["samples"][0]["values"] == [1, None, 2]
    assert frames.encode(data(None, None)) == frames.encode(data())


def test_six_channel_sample_meets_the_48_byte_goal():
    buf = frames.encode(data(12, 3, 1234, 123456, 1015, 253))
    assert len(buf) <= 48, len(buf)


def test_sample_times_accumulate_deltas():
    frame = base(
        "data", samples=[{"dt": 5, "values": []}, {"dt": 60, "values": []}, {"dt": 1, "values": []}]
    )
    assert frames.sample_times(frame) == [TS + 5, TS + 65, TS + 66]


def test_tuples_are_accepted_as_arrays():
    frame = base("data", samples=({"dt": 0, "values": (1, 2), "quality": ((0, 1),)},))
    assert frames.decode(frames.encode(frame))["samples"] == [
        {"dt": 0, "values": [1, 2], "quality": [[0, 1]]}
    ]


def test_too_large_names_the_limit_so_callers_can_split():
    big = base(
        "data",
        samples=[
            {"dt": 0 if i == 0 else 1, "values": [2**40 + i] * MAX_CHANNELS} for i in range(20)
        ],
    )
    with pytest.raises(ProtocolError) as info:
        frames.encode(big)
    assert info.value.reason == "too_large"
    assert str(MAX_FRAME_BYTES) in str(info.value)
    big["samples"] = big["samples"][:4]
    assert len(frames.encode(big)) <= MAX_FRAME_BYTES


def _mutated(frame, path, value):
    f = copy.deepcopy(frame)
    target = f
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return f


BIRTH = base(
    "birth",
    fw="1.0",
    cfg=1,
    channels=[
        {"alias": 0, "name": "io", "unit": "mA", "kind": "leak", "exp": -1},
        {"alias": 1, "name": "t", "unit": "degC", "kind": "temperature", "exp": -1},
    ],
)
ALARM = base("alarm", alias=1, cond="hi", level=2, state="raised", value=1, threshold=2)
STATUS = base("status", uptime=1, queued=0, dropped=0, rssi=None, heap=1, errors={})
DATA = base("data", samples=[{"dt": 0, "values": [1, 2]}, {"dt": 1, "values": [3]}])


@pytest.mark.parametrize(
    ("frame", "path", "value", "reason"),
    [
        (DATA, ["type"], "dat", "bad_type"),
        (DATA, ["type"], KeyError, "bad_type"),
        (DATA, ["tid"], "T 1", "bad_tid"),
        (DATA, ["tid"], "é", "bad_tid"),
        (DATA, ["tid"], KeyError, "bad_field"),
        (DATA, ["boot"], -1, "bad_field"),
        (DATA, ["seq"], 2**32, "bad_field"),
        (DATA, ["seq"], True, "bad_field"),
        (DATA, ["ts"], 1.0, "bad_field"),
        (DATA, ["unsynced"], 0, "bad_field"),
        (DATA, ["extra"], 1, "bad_field"),
        (DATA, ["samples"], [], "bad_field"),
        (DATA, ["samples"], [{"dt": 0, "values": []}] * (MAX_SAMPLES + 1), "too_many_samples"),
        (DATA, ["samples", 1, "dt"], 0, "bad_field"),
        (DATA, ["samples", 0, "dt"], -1, "bad_field"),
        (DATA, ["samples", 0, "values"], [0] * (MAX_CHANNELS + 1), "too_many_channels"),
        (DATA, ["samples", 0, "values"], [float("nan")], "bad_field"),
        (DATA, ["samples", 0, "values"], [float("-inf")], "bad_field"),
        (DATA, ["samples", 0, "values"], ["1"], "bad_field"),
        (DATA, ["samples", 0, "values"], [-(2**63) - 1], "bad_field"),
        (DATA, ["samples", 0, "quality"], [], "bad_field"),
        (DATA, ["samples", 0, "quality"], [[0, 0]], "bad_field"),
        (DATA, ["samples", 0, "quality"], [[1, 1], [1, 2]], "bad_alias"),
        (DATA, ["samples", 0, "quality"], [[MAX_CHANNELS, 1]], "bad_alias"),
        (DATA, ["samples", 0, "quality"], [[0, 1, 2]], "bad_field"),
        (DATA, ["samples", 0, "extra"], 1, "bad_field"),
        (BIRTH, ["channels", 1, "alias"], 0, "bad_alias"),
        (BIRTH, ["channels", 1, "alias"], -1, "bad_alias"),
        (BIRTH, ["channels", 1, "alias"], "1", "bad_field"),
        (BIRTH, ["channels", 1, "name"], "io", "bad_field"),
        (BIRTH, ["channels", 1, "name"], "", "bad_field"),
        (BIRTH, ["channels", 1, "name"], "é" * 33, "bad_field"),
        (BIRTH, ["channels", 1, "kind"], "pressure", "bad_field"),
        (BIRTH, ["channels", 1, "exp"], 10, "bad_field"),
        (BIRTH, ["channels", 1, "extra"], 1, "bad_field"),
        (BIRTH, ["fw"], "", "bad_field"),
        (BIRTH, ["cfg"], None, "bad_field"),
        (ALARM, ["state"], "open", "bad_field"),
        (ALARM, ["level"], 0, "bad_field"),
        (ALARM, ["cond"], "", "bad_field"),
        (ALARM, ["alias"], 64, "bad_alias"),
        (ALARM, ["threshold"], float("nan"), "bad_field"),
        (STATUS, ["rssi"], 300, "bad_field"),
        (STATUS, ["errors"], {"crc": -1}, "bad_field"),
        (STATUS, ["errors"], {1: 1}, "bad_field"),
        (STATUS, ["errors"], {"e%d" % i: 1 for i in range(33)}, "bad_field"),
        (base("cfgack", version=1, ok=True, reason=None), ["ok"], 1, "bad_field"),
        (base("cfgack", version=1, ok=True, reason=None), ["reason"], "x" * 256, "bad_field"),
        (base("cmdres", id=1, ok=True, result=None), ["result"], b"raw", "bad_field"),
        (base("cmdres", id=1, ok=True, result=None), ["result"], {1: 2}, "bad_field"),
        (base("config", version=1, config={}), ["config"], [1], "bad_field"),
        (base("config", version=1, config={}), ["config"], {"a": [[[[[[[1]]]]]]]}, "too_deep"),
        (base("cmd", id=1, name="x", args={}), ["name"], "", "bad_field"),
        (base("death"), ["version"], 1, "bad_field"),
    ],
)
def test_encoder_refuses_invalid_frames(frame, path, value, reason):
    assert frames.encode(frame)  # the unmutated frame is fine
    assert _reason(frames.encode, _mutated(frame, path, value)) == reason


def test_config_may_nest_to_the_depth_limit_exactly():
    frame = base("config", version=1, config={"a": [[[[[[1]]]]]]})  # 8 with the frame array
    assert frames.decode(frames.encode(frame)) == frame


@pytest.mark.parametrize("obj", [None, 1, "frame", b"\x01", {"type": "data"}, [], object()])
def test_from_obj_refuses_non_frames(obj):
    assert _reason(frames.from_obj, obj) in ("bad_field", "bad_version")


def test_from_obj_refuses_cbor2_specials():
    obj = frames.to_obj(STATUS)
    for special in (cbor2.undefined, cbor2.CBORSimpleValue(16), cbor2.CBORTag(1, 0)):
        obj[10] = special
        assert _reason(frames.from_obj, obj) == "bad_field"


def test_decode_checks_size_before_parsing():
    assert _reason(frames.decode, b"\xff" * (MAX_FRAME_BYTES + 1)) == "too_large"
    assert _reason(frames.decode, "not bytes") == "bad_field"


def test_message_keys_are_qstrs_and_every_raised_key_has_its_text():
    # protocol.messages: the modules a terminal keeps loaded raise keys of at
    # most 10 characters (interned, not heap strings, when loaded from .mpy);
    # a key missing from the table would show as the bare key.
    import ast
    from pathlib import Path

    from protocol import messages

    for table in (messages.TEXTS, messages.EXPECTED, messages.WHAT):
        assert all(len(key) <= 10 for key in table), [k for k in table if len(k) > 10]
    root = Path(messages.__file__).parent
    raised = []
    for name in ("cbor.py", "frames.py", "topics.py"):
        for node in ast.walk(ast.parse((root / name).read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            consts = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
            if node.func.id == "ProtocolError" and len(consts) > 1:
                raised.append(("TEXTS", consts[1]))
            elif node.func.id == "_bad":
                raised.append(("EXPECTED", consts[1]))
    assert len(raised) > 60
    for table, key in raised:
        assert isinstance(key, str), (table, key)
        if table == "TEXTS" or len(key) > 10:
            assert key in getattr(messages, table), (table, key)
