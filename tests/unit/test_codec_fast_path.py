"""The cloud decoder's shortcut for plain data frames (cloud.codec) gives the
device decoder's verdict on every edge it checks, valid or not."""

import cbor2
import pytest

from cloud import codec
from protocol.limits import INT_MAX, INT_MIN, MAX_CHANNELS, MAX_SAMPLES, U32_MAX
from tests.unit.test_protocol_fuzz import check


def data(**change):
    """A data frame's wire array with some elements replaced."""
    obj = {
        "version": 1,
        "code": 2,
        "tid": "T-01_a",
        "boot": 3,
        "seq": 7,
        "ts": 1_764_000_000,
        "flags": 0,
        "rows": [[0, [312, None, 1.5]], [60, [313]]],
    }
    obj.update(change)
    return cbor2.dumps(list(obj.values()))


EDGES = {
    "plain": data(),
    "unsynced": data(flags=1),
    "reserved flags": data(flags=0xFFFFFFFE),
    "flags too big": data(flags=U32_MAX + 1),
    "u32 edges": data(boot=U32_MAX, seq=0, ts=U32_MAX),
    "boot too big": data(boot=U32_MAX + 1),
    "negative seq": data(seq=-1),
    "bool seq": data(seq=True),
    "float ts": data(ts=1.0),
    "tid too long": data(tid="T" * 33),
    "tid 32": data(tid="T" * 32),
    "tid empty": data(tid=""),
    "tid slash": data(tid="T/1"),
    "tid non-ascii": data(tid="T\u00e91"),
    "tid newline": data(tid="T1\n"),
    "tid bytes": data(tid=b"T1"),
    "no rows": data(rows=[]),
    "most rows": data(rows=[[1 if i else 0, [i]] for i in range(MAX_SAMPLES)]),
    "too many rows": data(rows=[[1 if i else 0, [i]] for i in range(MAX_SAMPLES + 1)]),
    "first dt 0 then 0": data(rows=[[0, [1]], [0, [2]]]),
    "dt too big": data(rows=[[U32_MAX + 1, [1]]]),
    "values empty": data(rows=[[0, []]]),
    "most values": data(rows=[[0, list(range(MAX_CHANNELS))]]),
    "too many values": data(rows=[[0, list(range(MAX_CHANNELS + 1))]]),
    "int64 edges": data(rows=[[0, [INT_MIN, INT_MAX]]]),
    "int too big": data(rows=[[0, [INT_MAX + 1]]]),
    "int too small": data(rows=[[0, [INT_MIN - 1]]]),
    "nan": data(rows=[[0, [float("nan")]]]),
    "infinity": data(rows=[[0, [float("-inf")]]]),
    "negative zero": data(rows=[[0, [-0.0]]]),
    "bool value": data(rows=[[0, [True]]]),
    "text value": data(rows=[[0, ["1"]]]),
    "nested value": data(rows=[[0, [[1]]]]),
    "quality codes": data(rows=[[0, [1, 2], [1, 2]]]),
    "row too long": data(rows=[[0, [1], [1, 2], 4]]),
    "row is a map": data(rows=[{"dt": 0, "values": [1]}]),
    "rows are a map": data(rows={0: [1]}),
    "wrong version": data(version=2),
    "status code": data(code=4),
    "short array": cbor2.dumps([1, 2, "T1", 3, 7, 1_764_000_000, 0]),
    "long array": cbor2.dumps([1, 2, "T1", 3, 7, 1_764_000_000, 0, [[0, [1]]], 9]),
}


@pytest.mark.parametrize("buf", EDGES.values(), ids=list(EDGES))
def test_the_shortcut_agrees_with_the_device_decoder(buf):
    check(buf)


def test_the_shortcut_takes_plain_data_frames_and_leaves_the_rest():
    assert codec._plain_data_frame(cbor2.loads(EDGES["plain"])) is not None
    for name in ("quality codes", "nan", "tid slash", "status code"):
        assert codec._plain_data_frame(cbor2.loads(EDGES[name])) is None, name
