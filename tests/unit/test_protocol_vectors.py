"""Golden vectors on CPython: generated not hand-edited, device and cloud agree on each."""

import re
import runpy

import cbor2
import pytest

from protocol import frames
from protocol.errors import REASONS, ProtocolError
from tests.support.protocol import (
    FRAME_REASONS,
    ROOT,
    VECTORS,
    cloud_decode,
    load_vectors,
    same,
    strict_cbor2_loads,
)

ALL = load_vectors()
VALID = [v for v in ALL if "frame" in v]
INVALID = [v for v in ALL if "error" in v]


def _ids(vectors):
    return [v["file"] for v in vectors]


def test_files_are_exactly_what_the_generator_writes():
    gen = runpy.run_path(str(ROOT / "tools" / "gen_vectors.py"))
    want = gen["build"]()
    have = {p.name: p.read_text(encoding="utf-8") for p in VECTORS.glob("*.json")}
    assert sorted(have) == sorted(want), "run: python tools/gen_vectors.py"
    for name, text in want.items():
        assert have[name] == text, name + " differs; run: python tools/gen_vectors.py"


def test_vector_set_covers_every_type_and_reason():
    assert len(VALID) >= 30 and len(INVALID) >= 30
    assert {v["frame"]["type"] for v in VALID} == set(frames.TYPECODES)
    frame_level = set(REASONS) - {"bad_topic", "tid_mismatch"}
    assert {v["error"] for v in INVALID} == frame_level
    for v in ALL:
        assert re.fullmatch(r"\d{3}-[a-z0-9-]+\.json", v["file"])
        assert v["file"][4:-5] == v["name"]
        assert set(v) - {"file"} in (
            {"name", "description", "hex", "frame"},
            {"name", "description", "hex", "frame", "canonical"},
            {"name", "description", "hex", "error"},
        )


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_device_and_cloud_agree(vector):
    raw = bytes.fromhex(vector["hex"])
    device = frames.decode(raw)
    assert same(device, vector["frame"])
    assert same(cloud_decode(raw), device)
    assert same(frames.from_obj(cbor2.loads(raw)), device)
    encoded = frames.encode(vector["frame"])
    assert cbor2.dumps(frames.to_obj(vector["frame"]), canonical=True) == encoded
    if vector.get("canonical", True):
        assert encoded == raw
    else:
        assert encoded != raw
        assert same(frames.decode(encoded), frames.decode(frames.encode(device)))


@pytest.mark.parametrize("vector", INVALID, ids=_ids(INVALID))
def test_invalid_vector_refused_by_device_and_cloud(vector):
    raw = bytes.fromhex(vector["hex"])
    with pytest.raises(ProtocolError) as device:
        frames.decode(raw)
    assert device.value.reason == vector["error"], device.value
    with pytest.raises(ProtocolError) as cloud:
        cloud_decode(raw)
    if vector["error"] in FRAME_REASONS:
        # byte-level reasons may be worded differently by cbor2, frame-level ones may not
        assert cloud.value.reason == vector["error"], cloud.value


def test_strict_cbor2_loader_is_needed():
    # plain cbor2.loads would let these through: trailing bytes, tag 2 bignum
    trailing = next(v for v in INVALID if v["name"] == "trailing-bytes")
    bignum = next(v for v in INVALID if v["name"] == "tag-bignum")
    for v in (trailing, bignum):
        raw = bytes.fromhex(v["hex"])
        assert frames.from_obj(cbor2.loads(raw))["type"] == "data"
        with pytest.raises(ProtocolError):
            strict_cbor2_loads(raw)


def _readme_dump(title):
    """Bytes of the hex dump that follows ``title`` in protocol/README.md."""
    text = (ROOT / "protocol" / "README.md").read_text(encoding="utf-8")
    start = text.index(title)
    block = text[start:].split("```", 2)[1]
    out = bytearray()
    for line in block.splitlines():
        m = re.match(r"\s*((?:[0-9a-f]{2} ?)+)(?:\s{2,}|$)", line)
        if m:
            out += bytes.fromhex(m.group(1))
    return bytes(out)


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Example: birth", "birth"),
        ("Example: one data sample", "data-one-sample"),
        ("Example: quality flags", "data-quality"),
        ("Example: alarm", "alarm-raised"),
        ("Example: status", "status"),
        ("Example: death", "death"),
    ],
)
def test_readme_hex_dumps_are_the_vectors(title, name):
    vector = next(v for v in VALID if v["name"] == name)
    assert _readme_dump(title) == bytes.fromhex(vector["hex"])


def test_readme_devices_dump_is_the_vectors_head_and_tail():
    # The README shows the array head and the devices, eliding the rest.
    vector = bytes.fromhex(next(v for v in VALID if v["name"] == "birth-devices")["hex"])
    dump = _readme_dump("Example: a birth's devices")
    assert dump[:1] == vector[:1]
    assert vector.endswith(dump[1:])
    assert len(dump) - 1 == 64  # the figure the README gives
