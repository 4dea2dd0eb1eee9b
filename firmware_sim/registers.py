"""Register maps of the simulated models: the contract in ``docs/sensors.md``.

A point's *raw* value is the integer on the wire; ``engineering = raw * 10**exp``.
This module turns engineering values into raw integers and raw integers into
the 16-bit words (FC 3/4) or bits (FC 2) a device serves. It does no I/O.

Every model also answers holding registers 9000 (model code) and 9001
(firmware revision) with FC 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FC_COILS = 1
FC_DISCRETE_INPUTS = 2
FC_HOLDING = 3
FC_INPUT = 4

MODEL_CODE_ADDRESS = 9000
FIRMWARE_ADDRESS = 9001
# The map leaves the revision open; every simulated model reports 1.00.
FIRMWARE_REVISION = 0x0100

_RANGES = {
    "u16": (0, 0xFFFF),
    "s16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFFFFFF),
    "s32": (-0x80000000, 0x7FFFFFFF),
    "bit": (0, 1),
}


@dataclass(frozen=True)
class Point:
    """One channel of a model: where it lives and how its raw integer reads."""

    name: str
    fc: int
    address: int
    type: str  # u16 s16 u32 s32 bit
    exp: int = 0
    unit: str = ""
    kind: str = ""
    word_order: str = "ABCD"  # 32-bit only: ABCD high word first, CDAB low word first

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return 2 if self.type in ("u32", "s32") else 1

    def to_raw(self, value: float) -> int:
        """Engineering value -> raw integer, saturated to the type's range.

        Saturation is what real transmitters do at the ends of their range; a
        NaN reads as 0 rather than raising, so a bad physics parameter shows up
        as an implausible reading instead of a dead device.
        """
        low, high = _RANGES[self.type]
        if self.type == "bit":
            return 1 if value else 0
        if math.isnan(value):
            return 0
        scaled = value * 10.0 ** (-self.exp)
        if math.isinf(scaled):
            return high if scaled > 0 else low
        return max(low, min(high, round(scaled)))

    def to_value(self, raw: int) -> float:
        """Raw integer -> engineering value."""
        if self.type == "bit" or self.exp >= 0:
            return float(raw * 10**self.exp)
        # round() drops the binary noise of the scaling (30281.300000000003).
        return round(raw * 10.0**self.exp, -self.exp)

    def words(self, raw: int) -> list[int]:
        """Raw integer -> the register words (or the single bit) on the wire."""
        if self.width == 1:
            return [raw & 0xFFFF if self.type != "bit" else raw]
        high, low = (raw >> 16) & 0xFFFF, raw & 0xFFFF
        return [high, low] if self.word_order == "ABCD" else [low, high]


@dataclass(frozen=True)
class Model:
    """A sensor model: its identification and its points."""

    name: str
    code: int
    points: tuple[Point, ...]
    firmware: int = FIRMWARE_REVISION

    def point(self, name: str) -> Point:
        """The point called ``name``; ``KeyError`` if the model has none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)

    @property
    def function_codes(self) -> frozenset[int]:
        """Function codes the model answers (FC 3 always, for identification)."""
        return frozenset({FC_HOLDING} | {p.fc for p in self.points})

    def image(self, raw: dict[str, int]) -> dict[int, dict[int, int]]:
        """Raw point values -> ``{fc: {address: word_or_bit}}`` as served on the wire."""
        table: dict[int, dict[int, int]] = {fc: {} for fc in self.function_codes}
        for point in self.points:
            for offset, word in enumerate(point.words(raw[point.name])):
                table[point.fc][point.address + offset] = word
        table[FC_HOLDING][MODEL_CODE_ADDRESS] = self.code
        table[FC_HOLDING][FIRMWARE_ADDRESS] = self.firmware
        return table


def _meter(name: str, code: int, word_order: str) -> Model:
    return Model(
        name,
        code,
        (
            Point("kw", FC_INPUT, 0, "s32", -2, "kW", "power", word_order),
            Point("kwh", FC_INPUT, 2, "u32", -1, "kWh", "energy", word_order),
            Point("v", FC_INPUT, 4, "u16", -1, "V", "voltage"),
            Point("a", FC_INPUT, 5, "u16", -2, "A", "current"),
            Point("pf", FC_INPUT, 6, "s16", -3, "", "pf"),
        ),
    )


IM_100 = Model(
    "IM-100",
    0x1001,
    (
        Point("io", FC_INPUT, 0, "u16", -1, "mA", "leak"),
        Point("ior", FC_INPUT, 1, "u16", -1, "mA", "leak"),
        Point("v", FC_INPUT, 2, "u16", -1, "V", "voltage"),
    ),
)
PM_300 = _meter("PM-300", 0x2001, "ABCD")
PM_310 = _meter("PM-310", 0x2002, "CDAB")
TH_10 = Model(
    "TH-10",
    0x3001,
    (
        Point("t", FC_INPUT, 0, "s16", -1, "degC", "temperature"),
        Point("rh", FC_INPUT, 1, "u16", -1, "%RH", "humidity"),
    ),
)
DI_8 = Model(
    "DI-8",
    0x4001,
    tuple(Point(f"di{i + 1}", FC_DISCRETE_INPUTS, i, "bit", 0, "", "contact") for i in range(8)),
)

MODELS = {m.name: m for m in (IM_100, PM_300, PM_310, TH_10, DI_8)}
