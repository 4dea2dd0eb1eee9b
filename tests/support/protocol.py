"""Shared helpers for the protocol tests: vectors, a strict cbor2 decoder, strict equality.

``cloud_decode`` is the cloud-side recipe from ``protocol/README.md``: cbor2
does the byte layer, ``protocol.frames.from_obj`` does the validation.  The
tests hold it to the device decoder's verdict on every vector and on fuzzed
input, so the ingest worker can use it as written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from cloud import codec
from protocol import frames
from protocol.limits import (
    INT_MAX,
    INT_MIN,
    MAX_ACK_RANGES,
    MAX_CHANNELS,
    MAX_CHUNK,
    MAX_COND,
    MAX_STR,
    MAX_TEXT,
    RSSI_MAX,
    RSSI_MIN,
    U32_MAX,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "protocol" / "vectors"

# reasons decided by frames.from_obj, so cbor2 + from_obj must report the same one
FRAME_REASONS = frozenset(
    {
        "too_large",
        "bad_version",
        "bad_type",
        "bad_tid",
        "bad_field",
        "bad_alias",
        "too_many_channels",
        "too_many_samples",
    }
)


def load_vectors() -> list[dict[str, Any]]:
    """Every vector file, sorted, each with its file name under ``"file"``."""
    out = []
    for path in sorted(VECTORS.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["file"] = path.name
        if "data_hex" in doc.get("frame", ()):  # the chunk frame's byte string
            doc["frame"]["data"] = bytes.fromhex(doc["frame"].pop("data_hex"))
        out.append(doc)
    return out


strict_cbor2_loads = codec.strict_cbor2_loads
cloud_decode = codec.decode_frame


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types: 1 != 1.0 != True, 0.0 != -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# -- hypothesis strategies for valid frames --------------------------------------


def _clip(s: str, hi: int) -> str:
    while len(s.encode("utf-8")) > hi:
        s = s[:-1]
    return s


def _utf8_len(lo: int, hi: int) -> Any:
    """Text of lo..hi UTF-8 bytes (lo <= 1, hi >= 4, so clipping cannot go below lo)."""
    return st.text(min_size=lo, max_size=hi).map(lambda s: _clip(s, hi))


tids = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
u32 = st.integers(0, U32_MAX)
names = _utf8_len(1, MAX_STR)
numbers = st.one_of(
    st.integers(INT_MIN, INT_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
)
aliases = st.integers(0, MAX_CHANNELS - 1)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


# JSON data model; containers nest at most MAX_DEPTH - 1 below the frame array
trees = st.recursive(
    st.none() | st.booleans() | numbers | _utf8_len(0, MAX_TEXT),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
).filter(lambda v: _depth(v) <= 7)
map_trees = st.dictionaries(names, trees, max_size=5).filter(lambda v: _depth(v) <= 7)


@st.composite
def channels(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(0, MAX_CHANNELS))
    alias_list = draw(st.lists(aliases, min_size=n, max_size=n, unique=True))
    name_list = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    return [
        {
            "alias": a,
            "name": nm,
            "unit": draw(_utf8_len(0, MAX_STR)),
            "kind": draw(st.sampled_from(frames.KINDS)),
            "exp": draw(st.integers(-9, 9)),
        }
        for a, nm in zip(alias_list, name_list, strict=True)
    ]


@st.composite
def samples(draw: Any) -> list[dict[str, Any]]:
    """Samples whose values never end in None (the encoder would drop it)."""
    out = []
    for i in range(draw(st.integers(1, 6))):
        values = draw(st.lists(st.none() | numbers, max_size=MAX_CHANNELS))
        while values and values[-1] is None:
            values.pop()
        s: dict[str, Any] = {"dt": draw(st.integers(0 if i == 0 else 1, U32_MAX)), "values": values}
        q = draw(st.lists(aliases, unique=True, max_size=8))
        if q:
            s["quality"] = [[a, draw(st.sampled_from((1, 2, 3)))] for a in sorted(q)]
        out.append(s)
    return out


@st.composite
def ack_ranges(draw: Any) -> list[list[int]]:
    """Valid ack ranges: sorted, disjoint, not touching, inside u32."""
    out: list[list[int]] = []
    lowest = 0
    for _ in range(draw(st.integers(1, MAX_ACK_RANGES))):
        if lowest > U32_MAX:
            break
        gap = draw(st.sampled_from((0, 3, 70000, 2**31)))
        first = draw(st.integers(lowest, min(U32_MAX, lowest + gap)))
        count = draw(st.integers(1, min(U32_MAX - first + 1, 300)))
        out.append([first, count])
        lowest = first + count + 1
    return out


def _fields(ftype: str) -> Any:
    opt_number = st.none() | numbers
    return {
        "birth": st.fixed_dictionaries({"fw": names, "cfg": u32, "channels": channels()}),
        "data": st.fixed_dictionaries({"samples": samples()}),
        "alarm": st.fixed_dictionaries(
            {
                "alias": st.none() | aliases,
                "cond": _utf8_len(1, MAX_COND),
                "level": st.sampled_from((1, 2)),
                "state": st.sampled_from(("raised", "cleared")),
                "value": opt_number,
                "threshold": opt_number,
            }
        ),
        "status": st.fixed_dictionaries(
            {
                "uptime": u32,
                "queued": u32,
                "dropped": u32,
                "rssi": st.none() | st.integers(RSSI_MIN, RSSI_MAX),
                "heap": u32,
                "errors": st.dictionaries(names, u32, max_size=8),
            }
        ),
        "cfgack": st.fixed_dictionaries(
            {"version": u32, "ok": st.booleans(), "reason": st.none() | _utf8_len(0, MAX_TEXT)}
        ),
        "cmdres": st.fixed_dictionaries({"id": u32, "ok": st.booleans(), "result": trees}),
        "death": st.just({}),
        "config": st.fixed_dictionaries({"version": u32, "config": map_trees}),
        "cmd": st.fixed_dictionaries({"id": u32, "name": names, "args": map_trees}),
        "ack": st.fixed_dictionaries({"for_boot": u32, "ranges": ack_ranges()}),
        "otareq": st.fixed_dictionaries(
            {"job": u32, "path": names, "off": u32, "len": st.integers(1, MAX_CHUNK)}
        ),
        "otastat": st.fixed_dictionaries(
            {
                "job": u32,
                "state": names,
                "done": u32,
                "total": u32,
                "reason": st.none() | _utf8_len(0, MAX_TEXT),
            }
        ),
        "chunk": st.fixed_dictionaries(
            {
                "job": u32,
                "path": names,
                "off": u32,
                "size": u32,
                "data": st.binary(max_size=MAX_CHUNK),
            }
        ),
    }[ftype]


@st.composite
def frames_of(draw: Any, ftype: str) -> dict[str, Any]:
    """A valid frame dict of type ``ftype`` (may exceed MAX_FRAME_BYTES)."""
    f = {
        "type": ftype,
        "tid": draw(tids),
        "boot": draw(u32),
        "seq": draw(u32),
        "ts": draw(u32),
        "unsynced": draw(st.booleans()),
    }
    f.update(draw(_fields(ftype)))
    return f


any_frame = st.sampled_from(sorted(frames.TYPECODES)).flatmap(frames_of)
