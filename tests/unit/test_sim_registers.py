"""docs/sensors.md, the profile files and the simulator describe the same register maps.

The simulator builds its devices from the profile files, so these tests
check the last place a map could drift: the documentation's tables. They
also pin the encoder the simulator serves with to the terminal's decoder.
"""

from __future__ import annotations

import math
import re
import struct

import pytest

from edge import profiles
from firmware_sim.registers import Point, model, models
from tests.support.sim import REPO

DOC = REPO / "docs" / "sensors.md"


def _doc_models() -> dict[str, list[dict[str, str]]]:
    """Each '## MODEL — ...' or '### MODEL — ...' section's point table, by model."""
    text = DOC.read_text(encoding="utf-8")
    out: dict[str, list[dict[str, str]]] = {}
    for section in re.split(r"^#{2,3} ", text, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        match = re.match(r"(\S+) — ", heading)
        if not match:
            continue
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("|")
        ]
        header = [h.lower() for h in rows[0]]
        out[match.group(1)] = [dict(zip(header, row, strict=True)) for row in rows[2:]]
    return out


DOC_MODELS = _doc_models()


def _expand(cells: dict[str, str]) -> list[tuple[str, int]]:
    """'di1 .. di8' at '0 .. 7' -> [(di1, 0) ... (di8, 7)]."""
    names, addresses = cells["point"], cells["address"]
    if ".." not in names:
        return [(names, int(addresses))]
    first, last = (n.strip() for n in names.split(".."))
    lo, hi = (int(a) for a in addresses.split(".."))
    prefix = first.rstrip("0123456789")
    start = int(first[len(prefix) :])
    assert last == f"{prefix}{start + hi - lo}"
    return [(f"{prefix}{start + i}", lo + i) for i in range(hi - lo + 1)]


def test_doc_documents_every_profile():
    assert set(DOC_MODELS) == set(models()) == set(profiles.models_in(profiles.BUILTIN_DIR))


@pytest.mark.parametrize("name", sorted(DOC_MODELS))
def test_points_match_the_doc(name):
    served = {p.name: p for p in model(name).points}
    documented = []
    for cells in DOC_MODELS[name]:
        for point_name, address in _expand(cells):
            documented.append(point_name)
            p = served[point_name]
            assert p.fc == int(cells["fc"]), point_name
            assert p.address == address, point_name
            assert p.type == cells["type"], point_name
            assert p.exp == int(cells.get("exp") or 0), point_name
            assert p.scale == (float(cells["scale"]) if cells.get("scale") else None), point_name
            assert p.unit == cells["unit"], point_name
            assert p.kind == cells["kind"], point_name
            if p.width == 2:
                assert p.word_order == cells["order"], point_name
            else:
                assert cells["order"] == "", point_name
    assert documented == list(served)


def test_raw_scaling_saturates_and_rounds():
    ior = Point("ior", 4, 1, "u16", -1)
    assert ior.to_raw(35.0) == 350
    assert ior.to_raw(0.04) == 0
    assert ior.to_raw(-3) == 0
    assert ior.to_raw(1e9) == 0xFFFF
    assert ior.to_raw(float("nan")) == 0
    t = Point("t", 4, 0, "s16", -1)
    assert t.to_raw(-12.34) == -123
    assert t.words(t.to_raw(-12.3)) == [0xFF85]
    assert t.to_value(-123) == -12.3


def test_word_order():
    abcd = Point("kw", 4, 0, "s32", -2, word_order="ABCD")
    cdab = Point("kw", 4, 0, "s32", -2, word_order="CDAB")
    raw = abcd.to_raw(-1234.56)
    assert raw == -123456
    assert abcd.words(raw) == [0xFFFE, 0x1DC0]
    assert cdab.words(raw) == [0x1DC0, 0xFFFE]
    kwh = Point("kwh", 4, 2, "u32", -1)
    assert kwh.words(kwh.to_raw(123456.7)) == [0x0012, 0xD687]
    f = Point("f", 4, 0, "f32", word_order="BADC")
    assert f.words(-1.5) == [0xC0BF, 0x0000]  # 0xBFC00000, bytes swapped in each word
    assert Point("f", 4, 0, "f32", word_order="DCBA").words(-1.5) == [0x0000, 0xC0BF]


def test_float_points_saturate_and_keep_nan():
    f = Point("kw", 4, 0, "f32", scale=0.001)
    assert f.to_raw(12.5) == 12500.0
    assert f.words(f.to_raw(12.5)) == list(struct.unpack(">HH", struct.pack(">f", 12500.0)))
    assert f.words(1e300) == list(struct.unpack(">HH", struct.pack(">f", 3.4028234663852886e38)))
    assert f.words(float("-inf"))[0] == 0xFF7F
    nan = f.words(float("nan"))
    assert math.isnan(struct.unpack(">f", struct.pack(">HH", *nan))[0])


@pytest.mark.parametrize("name", sorted(DOC_MODELS))
def test_the_terminal_decodes_what_the_simulator_encodes(name):
    """Encode a spread of values with the simulator, decode them with edge.profiles."""
    prof = profiles.profile_table(None, [name])[name]
    sim = {p.name: p for p in model(name).points}
    for fraction in (0.0, 0.013, 0.5, 0.99):
        image: dict[int, dict[int, int]] = {1: {}, 2: {}, 3: {}, 4: {}}
        sent = {}
        for p in sim.values():
            value = 1.0 if (p.type == "bit" and fraction > 0.4) else fraction * 400 - 20
            if p.type in ("u16", "u32"):
                value = abs(value)
            raw = p.to_raw(value)
            sent[p.name] = p.to_value(raw)
            for i, word in enumerate(p.words(raw)):
                image[p.fc][p.address + i] = word
        for fc, addr, count, items in profiles.plan_reads(prof):
            regs = [image[fc].get(a, 0) for a in range(addr, addr + count)]
            for item in items:
                point = prof["points"][item[0]]
                got = profiles.decode_point(item, regs)
                if point["type"] not in ("f32",) and "scale" not in point:
                    exp = point["exp"]
                    got = round(got * 10.0**exp, -exp) if exp < 0 else float(got)
                assert got == pytest.approx(sent[point["name"]], rel=1e-6, abs=1e-9), (
                    name,
                    point["name"],
                )
