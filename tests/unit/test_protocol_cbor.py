"""protocol.cbor against cbor2: same canonical bytes, same values, strict where it must be."""

import struct
import tracemalloc

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from protocol import cbor
from protocol.errors import ProtocolError
from protocol.limits import MAX_DEPTH
from tests.support.protocol import same

keys = st.one_of(st.text(max_size=8), st.integers(-(2**64), 2**64 - 1), st.binary(max_size=8))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)


def _depth(v):
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


def _poke(raw, i, byte):
    """``raw`` with one byte replaced: near-valid UTF-8 for the checker."""
    i %= len(raw)
    return raw[:i] + bytes([byte]) + raw[i + 1 :]


def _reason(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    return info.value.reason


@settings(max_examples=500)
@given(values.filter(lambda v: _depth(v) <= MAX_DEPTH))
def test_encoder_matches_cbor2_canonical_byte_for_byte(value):
    assert cbor.dumps(value) == cbor2.dumps(value, canonical=True)


@settings(max_examples=500)
@given(values.filter(lambda v: _depth(v) <= MAX_DEPTH))
def test_decoder_reads_cbor2_output_canonical_or_not(value):
    assert same(cbor.loads(cbor2.dumps(value, canonical=True)), value)
    # cbor2's default mode writes every float as a double and keeps dict order
    assert same(cbor.loads(cbor2.dumps(value)), value)


def test_every_half_float_decodes_like_struct_and_reencodes_like_cbor2():
    for h in range(0x10000):
        raw = b"\xf9" + h.to_bytes(2, "big")
        got = cbor.loads(raw)
        want = struct.unpack(">e", raw[1:])[0]
        assert same(got, want), hex(h)
        assert cbor.dumps(got) == cbor2.dumps(want, canonical=True), hex(h)


@settings(max_examples=2000)
@given(st.binary(min_size=4, max_size=4) | st.binary(min_size=8, max_size=8))
def test_float_bit_patterns_encode_like_cbor2(raw):
    x = struct.unpack(">f" if len(raw) == 4 else ">d", raw)[0]
    assert cbor.dumps(x) == cbor2.dumps(x, canonical=True)
    assert same(cbor.loads(cbor.dumps(x)), x)


def test_decode_reports_the_bytes_it_used():
    buf = b"\x01\x82\x02\x03\x61a"
    assert cbor.decode(buf) == (1, 1)
    assert cbor.decode(buf, 1) == ([2, 3], 4)
    assert cbor.decode(memoryview(buf), 4) == ("a", 6)


def test_loads_refuses_trailing_bytes():
    assert _reason(cbor.loads, b"\x01\x02") == "trailing_bytes"


@pytest.mark.parametrize(
    ("hexstr", "reason"),
    [
        ("", "truncated"),
        ("19", "truncated"),
        ("1a0000", "truncated"),
        ("636162", "truncated"),
        ("8201", "truncated"),
        ("a16161", "truncated"),
        ("9f01ff", "unsupported_cbor"),
        ("5f4101ff", "unsupported_cbor"),
        ("bf616101ff", "unsupported_cbor"),
        ("1f", "unsupported_cbor"),
        ("1c", "unsupported_cbor"),
        ("3d", "unsupported_cbor"),
        ("c11a00000000", "unsupported_cbor"),
        ("d9d9f701", "unsupported_cbor"),
        ("f7", "unsupported_cbor"),
        ("f0", "unsupported_cbor"),
        ("f8ff", "unsupported_cbor"),
        ("fc", "unsupported_cbor"),
        ("ff", "unsupported_cbor"),
        ("a1f401", "unsupported_cbor"),
        ("a1f93c0001", "unsupported_cbor"),
        ("a1800102", "unsupported_cbor"),
        ("a2616101616102", "duplicate_key"),
        ("a201010102", "duplicate_key"),
        ("61ff", "bad_utf8"),
        ("62c0af", "bad_utf8"),
        ("63eda080", "bad_utf8"),
        ("64f4908080", "bad_utf8"),
        ("62e697", "bad_utf8"),
    ],
)
def test_decoder_refuses(hexstr, reason):
    assert _reason(cbor.loads, bytes.fromhex(hexstr)) == reason


def test_non_shortest_heads_are_accepted_and_reencoded_short():
    assert cbor.loads(bytes.fromhex("1b0000000000000001")) == 1
    assert cbor.loads(bytes.fromhex("9800")) == []
    assert same(cbor.loads(bytes.fromhex("fb3ff8000000000000")), 1.5)
    assert cbor.dumps(1.5) == bytes.fromhex("f93e00")


def test_depth_limit_is_exactly_max_depth_on_both_sides():
    ok = 1
    for _ in range(MAX_DEPTH):
        ok = [ok]
    assert cbor.loads(cbor.dumps(ok)) == ok
    assert _reason(cbor.dumps, [ok]) == "too_deep"
    assert _reason(cbor.loads, b"\x81" + cbor2.dumps(ok)) == "too_deep"
    assert _reason(cbor.loads, b"\xa1\x61k" + cbor2.dumps(ok)) == "too_deep"


def test_a_hostile_length_allocates_nothing():
    hostile = [
        b"\x5b" + b"\xff" * 8,  # byte string of 2**64-1
        b"\x7b" + b"\xff" * 8,
        b"\x9b" + b"\xff" * 8,  # array of 2**64-1 items
        b"\xbb" + b"\xff" * 8,
        b"\x9a\xff\xff\xff\xff" + b"\x00" * 4000,
    ]
    tracemalloc.start()
    try:
        for buf in hostile:
            tracemalloc.reset_peak()
            assert _reason(cbor.loads, buf) == "truncated"
            assert tracemalloc.get_traced_memory()[1] < 64 * 1024
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**64) - 1, {1, 2}, object(), {(1,): 1}, {True: 1}, {1.5: 1}, 1j],
)
def test_encoder_refuses_what_cbor_frames_cannot_carry(value):
    assert _reason(cbor.dumps, value) == "unsupported_cbor"


def test_encoder_refuses_lone_surrogates():
    assert _reason(cbor.dumps, "\ud800") == "bad_utf8"


def test_map_keys_sort_length_first_like_cbor2():
    value = {"bb": 1, "a": 2, "c": 3, 10: 4, -1: 5, 1000: 6, b"x": 7, "zz": 8, "aaa": 9}
    assert cbor.dumps(value).hex() == cbor2.dumps(value, canonical=True).hex()
    assert list(cbor.loads(cbor.dumps(value))) == [10, -1, b"x", "a", "c", 1000, "bb", "zz", "aaa"]


@settings(max_examples=3000)
@given(
    st.binary(max_size=12)
    | st.text(max_size=6).map(lambda s: s.encode("utf-8", "surrogatepass"))
    | st.tuples(st.text(min_size=1, max_size=4), st.integers(0, 15), st.integers(0, 255)).map(
        lambda t: _poke(t[0].encode("utf-8", "surrogatepass"), t[1], t[2])
    )
)
@example(b"\xed\xa0\x80")  # surrogate U+D800
@example(b"\xed\x9f\xbf")  # U+D7FF, just below the surrogates
@example(b"\xee\x80\x80")  # U+E000, just above
@example(b"\xc0\xaf")  # overlong '/'
@example(b"\xc2\x80")  # U+0080, shortest 2-byte form
@example(b"\xe0\x9f\xbf")  # overlong 3-byte
@example(b"\xf0\x8f\xbf\xbf")  # overlong 4-byte
@example(b"\xf4\x8f\xbf\xbf")  # U+10FFFF
@example(b"\xf4\x90\x80\x80")  # above U+10FFFF
@example(b"\xf5\x80\x80\x80")
@example(b"\xe6\x97")  # cut short
def test_strict_utf8_check_agrees_with_cpython(raw):
    # MicroPython's own str() lets overlongs and surrogates through, so the
    # decoder relies on _strict_utf8 there; CPython's codec is the reference
    try:
        raw.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert cbor._strict_utf8(raw) is valid
