"""Hostile input: the decoder is total (frame or ProtocolError), fast, and agrees with cbor2."""

import time

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import frames
from protocol.errors import REASONS, ProtocolError
from protocol.limits import MAX_FRAME_BYTES
from tests.support.protocol import FRAME_REASONS, cloud_decode, load_vectors, same

VALID = [bytes.fromhex(v["hex"]) for v in load_vectors() if "frame" in v]
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def verdict(decode, buf):
    """("ok", frame) or ("error", reason); anything but ProtocolError propagates."""
    try:
        return ("ok", decode(buf))
    except ProtocolError as err:
        assert err.reason in REASONS, err
        return ("error", err.reason)


def check(buf):
    """The decoder's contract on any input, and agreement with the cloud path."""
    device = verdict(frames.decode, buf)
    cloud = verdict(cloud_decode, buf)
    assert device[0] == cloud[0], (buf.hex(), device, cloud)
    if device[0] == "ok":
        assert same(device[1], cloud[1]), buf.hex()
        # whatever decodes re-encodes, canonically and stably
        again = frames.encode(device[1])
        assert len(again) <= len(buf)
        assert frames.encode(frames.decode(again)) == again
    elif device[1] in FRAME_REASONS:
        assert cloud[1] == device[1], (buf.hex(), device, cloud)


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes(buf):
    check(buf)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_mutated_vectors(raw, data):
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(("flip", "set", "insert", "delete", "cut")))
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and buf:
            del buf[i]
        elif op == "cut":
            del buf[i:]
    check(bytes(buf))


@pytest.mark.parametrize("raw", VALID, ids=range(len(VALID)))
def test_every_prefix_of_every_valid_vector(raw):
    for n in range(len(raw)):
        assert verdict(frames.decode, raw[:n])[0] == "error"
        check(raw[:n])


# structure-aware: frame-shaped arrays with random content, to reach deep into from_obj
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(),
    st.text(max_size=70),
    st.binary(max_size=4),
    st.sampled_from([cbor2.undefined, cbor2.CBORSimpleValue(99)]),
    st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 55799, 999]), st.integers(0, 5)),
)
objects = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers(-2, 2), inner, max_size=3)
    ),
    max_leaves=16,
)
heads = st.tuples(
    st.sampled_from([1, 1, 1, 0, 2]),
    st.sampled_from([*sorted(frames.TYPES_BY_CODE), 0, 8, 99]),
    st.sampled_from(["T0001", "x", "", "a/b", "Z" * 33]),
    st.integers(-1, 2**32),
    st.integers(-1, 2**32),
    st.integers(-1, 2**32),
    st.integers(-1, 3),
)


@FUZZ
@given(heads, st.lists(objects, max_size=7))
def test_frame_shaped_random_objects(head, tail):
    try:
        buf = cbor2.dumps([*head, *tail])
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return  # cbor2 cannot encode it (e.g. unhashable keys); nothing to decode
    check(buf[: MAX_FRAME_BYTES + 1])


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_vectors_with_a_random_element_swapped(raw, data):
    obj = cbor2.loads(raw)
    i = data.draw(st.integers(0, len(obj) - 1))
    obj[i] = data.draw(objects)
    try:
        buf = cbor2.dumps(obj)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return
    check(buf)


def _slowest(inputs):
    worst = 0.0
    for buf in inputs:
        t0 = time.perf_counter()
        verdict(frames.decode, buf)
        worst = max(worst, time.perf_counter() - t0)
    return worst


def test_worst_case_inputs_finish_quickly():
    # a full-size frame of the densest shapes; the decoder is linear, so each
    # takes well under a millisecond or two: 50 ms leaves room for slow CI
    n = MAX_FRAME_BYTES
    inputs = [
        b"\x99\x0f\xfc" + b"\x00" * (n - 3),  # 4092-item array of zeros
        b"\x99\x07\xfe" + b"\x81" * 8 + b"\x00" * (n - 11),
        b"\x81" * 8 + b"\x00",  # deepest allowed nesting
        b"\x81" * (n - 1) + b"\x00",  # far too deep
        b"\xb9\x07\xf0" + b"".join(b"\x19" + i.to_bytes(2, "big") + b"\x00" for i in range(1016)),
        b"\x79\x0f\xfd" + "é".encode() * 2046 + b"a",  # long non-ASCII text
        bytes.fromhex(next(v["hex"] for v in load_vectors() if v["name"] == "config-4096-bytes")),
    ]
    assert all(len(b) <= n for b in inputs)
    assert _slowest(inputs) < 0.05
