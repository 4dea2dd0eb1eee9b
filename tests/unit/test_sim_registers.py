"""The simulator serves exactly the register maps of docs/sensors.md."""

from __future__ import annotations

import re

import pytest

from firmware_sim.registers import MODELS, Point
from tests.support.sim import REPO

DOC = REPO / "docs" / "sensors.md"


def _doc_models() -> dict[str, dict]:
    """Parse each '## <model> ... — model code 0x....' section and its table."""
    text = DOC.read_text(encoding="utf-8")
    models: dict[str, dict] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        match = re.match(r"(\S+) .*model code (0x[0-9A-Fa-f]+)", heading)
        if not match:
            continue
        name, code = match.group(1), int(match.group(2), 16)
        rows = [
            [cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("|")
        ]
        points = []
        if rows:
            header = [h.lower() for h in rows[0]]
            for row in rows[2:]:
                cells = dict(zip(header, row, strict=True))
                points.append(cells)
        models[name] = {"code": code, "points": points, "text": section}
    return models


DOC_MODELS = _doc_models()


def test_doc_and_simulator_know_the_same_models():
    assert set(DOC_MODELS) == set(MODELS)
    for name, model in MODELS.items():
        assert model.code == DOC_MODELS[name]["code"], name


def _expand(cells: dict) -> list[tuple[str, int]]:
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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_points_match_the_doc(name):
    model = MODELS[name]
    doc = DOC_MODELS[name]
    if not doc["points"]:  # "Same points as PM-300 but ... low word first (CDAB)"
        assert "CDAB" in doc["text"]
        base = re.search(r"Same points as (\S+)", doc["text"]).group(1)
        doc = DOC_MODELS[base]
        expected_order = "CDAB"
    else:
        expected_order = None
    served = {p.name: p for p in model.points}
    documented = []
    for cells in doc["points"]:
        for point_name, address in _expand(cells):
            documented.append(point_name)
            p = served[point_name]
            assert p.fc == int(cells["fc"]), point_name
            assert p.address == address, point_name
            assert p.type == cells["type"], point_name
            assert p.exp == int(cells.get("exp") or 0), point_name
            assert p.unit == cells.get("unit", ""), point_name
            assert p.kind == cells["kind"], point_name
            if p.width == 2:
                order = expected_order or cells["word order"].split()[0]
                assert p.word_order == order, point_name
    assert sorted(documented) == sorted(served)


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
