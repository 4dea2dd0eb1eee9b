"""Golden vectors under MicroPython (and CPython): decode, verdicts, re-encoding.

Plain functions and bare asserts only: this module runs unchanged on
MicroPython 1.27 (tools/mpy_test.py) and under pytest.
"""

import json
import os

from protocol import batch, frames
from protocol.errors import ProtocolError


def _root():
    # works for "/repo/tests/mpy/x.py" (MicroPython) and any CPython path
    parts = __file__.replace("\\", "/").split("/")
    return "/".join(parts[:-3]) or "."


def _vectors():
    vdir = _root() + "/protocol/vectors"
    names = sorted(n for n in os.listdir(vdir) if n.endswith(".json"))
    out = []
    for name in names:
        with open(vdir + "/" + name, encoding="utf-8") as fh:
            doc = json.load(fh)
        doc["file"] = name
        if "data_hex" in doc.get("frame", ()):  # the chunk frame's byte string
            doc["frame"]["data"] = bytes.fromhex(doc["frame"].pop("data_hex"))
        out.append(doc)
    return out


def _same(a, b):
    """Equality that tells 1 from 1.0 from True and 0.0 from -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and str(a)[0] == str(b)[0]  # sign of zero via its text
    if isinstance(a, list):
        if len(a) != len(b):
            return False
        for i in range(len(a)):
            if not _same(a[i], b[i]):
                return False
        return True
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not _same(a[k], b[k]):
                return False
        return True
    return a == b


def test_enough_vectors_of_every_kind():
    vectors = _vectors()
    valid = [v for v in vectors if "frame" in v]
    invalid = [v for v in vectors if "error" in v]
    assert len(vectors) >= 30
    assert len(invalid) >= 30
    types = set(v["frame"]["type"] for v in valid)
    assert types == set(frames.TYPECODES), types


def test_valid_vectors_decode_to_their_frame():
    for v in _vectors():
        if "frame" in v:
            got = frames.decode(bytes.fromhex(v["hex"]))
            assert _same(got, v["frame"]), v["file"]


def test_canonical_vectors_encode_to_their_exact_bytes():
    for v in _vectors():
        if "frame" in v:
            encoded = frames.encode(v["frame"])
            if v.get("canonical", True):
                assert encoded == bytes.fromhex(v["hex"]), v["file"]
            else:
                # accepted input, but an encoder writes the canonical form
                assert encoded != bytes.fromhex(v["hex"]), v["file"]
                again = frames.decode(encoded)
                assert frames.encode(again) == encoded, v["file"]


def test_canonical_data_vectors_built_sample_by_sample():
    # the terminal's path (protocol.batch): each sample encoded when taken,
    # the head written when the batch closes; same bytes as frames.encode
    checked = 0
    for v in _vectors():
        f = v.get("frame")
        if f is None or f["type"] != "data" or not v.get("canonical", True):
            continue
        body = bytearray()
        for s in f["samples"]:
            values = s["values"]
            n = len(values)
            while n and values[n - 1] is None:
                n -= 1
            flat = []
            for alias, code in s.get("quality", ()):
                flat.append(alias)
                flat.append(code)
            body.extend(batch.sample(s["dt"], values[:n], flat))
        flags = 1 if f["unsynced"] else 0
        got = batch.frame(f["tid"], f["boot"], f["seq"], f["ts"], flags, len(f["samples"]), body)
        assert bytes(got) == bytes.fromhex(v["hex"]), v["file"]
        checked += 1
    assert checked >= 8, checked


def test_invalid_vectors_raise_their_reason():
    for v in _vectors():
        if "error" not in v:
            continue
        try:
            frames.decode(bytes.fromhex(v["hex"]))
        except ProtocolError as err:
            assert err.reason == v["error"], (v["file"], err.reason, v["error"])
        else:
            raise AssertionError(v["file"] + " decoded but should fail: " + v["error"])


def test_readme_frame_fits_the_size_goal():
    for v in _vectors():
        if v["name"] == "data-one-sample":
            assert len(frames.encode(v["frame"])) <= 48
            return
    raise AssertionError("data-one-sample vector missing")
