"""Register images of the simulated models, built from the sensor profiles.

A simulated device serves exactly the map the terminal reads: the profile
files in ``edge/models/`` (``docs/sensors.md``), loaded through the
installer's checker (:mod:`edge.installer.profilefile`). So a profile and
its simulator cannot drift: change the file and both sides change.

This module turns engineering values into the raw numbers and 16-bit words
(FC 3/4) or bits (FC 1/2) a device serves, the exact inverse of
:func:`edge.profiles.decode_point`, and adds the identification registers
the profile documents (``ident``). It does no I/O after loading a profile.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from typing import Any

from edge import profiles as edge_profiles
from edge.installer import profilefile
from edge.installer.errors import ProfileError

from .errors import ConfigError

FC_COILS = 1
FC_DISCRETE_INPUTS = 2
FC_HOLDING = 3
FC_INPUT = 4

_RANGES = {
    "u16": (0, 0xFFFF),
    "s16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFFFFFF),
    "s32": (-0x80000000, 0x7FFFFFFF),
    "bit": (0, 1),
}
_F32_MAX = 3.4028234663852886e38


def _swap(word: int) -> int:
    return (word & 0xFF) << 8 | word >> 8


def words32(value: int, order: str) -> list[int]:
    """A 32-bit pattern as two words in ``order`` (ABCD CDAB BADC DCBA)."""
    high, low = (value >> 16) & 0xFFFF, value & 0xFFFF
    if order == "CDAB":
        return [low, high]
    if order == "BADC":
        return [_swap(high), _swap(low)]
    if order == "DCBA":
        return [_swap(low), _swap(high)]
    return [high, low]


def f32_bits(value: float) -> int:
    """IEEE-754 single precision bits of ``value`` (saturated; NaN stays NaN)."""
    if math.isinf(value) or (not math.isnan(value) and abs(value) > _F32_MAX):
        value = math.copysign(_F32_MAX, value)
    return int.from_bytes(struct.pack(">f", value), "big")


def encode(value: int | float, typ: str, order: str) -> list[int]:
    """A raw number of type ``typ`` (u16 s16 u32 s32 f32 bit) as words (or a bit) on the wire."""
    if typ == "bit":
        return [int(value)]
    if typ == "f32":
        return words32(f32_bits(float(value)), order)
    if typ in ("u16", "s16"):
        return [int(value) & 0xFFFF]
    return words32(int(value) & 0xFFFFFFFF, order)


@dataclass(frozen=True)
class Point:
    """One channel of a model: where it lives and how its engineering value is sent."""

    name: str
    fc: int
    address: int
    type: str  # u16 s16 u32 s32 f32 bit
    exp: int = 0
    unit: str = ""
    kind: str = ""
    word_order: str = "ABCD"
    scale: float | None = None
    offset: float = 0.0

    @classmethod
    def from_profile(cls, p: dict[str, Any]) -> Point:
        """A point of a profile normalised by :func:`edge.profiles.validate_profile`."""
        return cls(
            p["name"],
            p["fc"],
            p["addr"],
            p["type"],
            p["exp"],
            p["unit"],
            p["kind"],
            p.get("order", "ABCD"),
            p.get("scale"),
            p.get("offset", 0),
        )

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return 2 if self.type in ("u32", "s32", "f32") else 1

    def to_raw(self, value: float) -> int | float:
        """Engineering value -> the number on the wire, saturated to the type's range.

        Saturation is what real transmitters do at the ends of their range; a
        NaN reads as 0 on integer types rather than raising, so a bad physics
        parameter shows up as an implausible reading instead of a dead device.
        """
        if self.type == "bit":
            return 1 if value else 0
        if self.scale is not None:
            value = (value - self.offset) / self.scale
        elif self.exp:
            value = value * 10.0 ** (-self.exp)
        if self.type == "f32":
            return value
        low, high = _RANGES[self.type]
        if math.isnan(value):
            return 0
        if math.isinf(value):
            return high if value > 0 else low
        return max(low, min(high, round(value)))

    def to_value(self, raw: int | float) -> float:
        """Raw number -> engineering value, as the terminal computes it."""
        if self.type == "bit":
            return float(raw)
        if self.scale is not None:
            return raw * self.scale + self.offset
        if self.type == "f32":
            # what the terminal decodes: the value rounded to single precision
            return float(struct.unpack(">f", struct.pack(">f", raw))[0])
        if self.exp >= 0:
            return float(raw * 10**self.exp)
        # round() drops the binary noise of the scaling (30281.300000000003).
        return round(raw * 10.0**self.exp, -self.exp)

    def words(self, raw: int | float) -> list[int]:
        """Raw number -> the register words (or the single bit) on the wire."""
        return encode(raw, self.type, self.word_order)


@dataclass(frozen=True)
class Ident:
    """An identification register block of a model (profile ``ident``)."""

    name: str
    fc: int
    address: int
    type: str  # u16 s16 u32 s32 f32 text
    count: int
    word_order: str
    expect: Any  # number, text, "unit", "baud" or None (shown only)
    codes: dict[int, float]

    def words(self, unit: int, baud: int, serial: int) -> list[int]:
        """What a genuine device serves: its address, its baud code, the text, a serial."""
        if self.expect == "unit":
            value: Any = unit
        elif self.expect == "baud":
            # a rate the map has no code for: the device would not run at it
            value = self.codes.get(baud, -1)
        elif self.expect is not None:
            value = self.expect
        else:
            value = serial
        if self.type == "text":
            data = str(value).encode("ascii")[: 2 * self.count].ljust(2 * self.count, b" ")
            return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]
        return encode(value, self.type, self.word_order)


@dataclass(frozen=True)
class Model:
    """A sensor model: its points, identification and how it answers reads."""

    name: str
    points: tuple[Point, ...]
    idents: tuple[Ident, ...] = ()
    mei: dict[str, str] | None = None
    max_gap: int = 4
    status: str = ""
    baud: int = 9600  # factory default

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> Model:
        """A model from a full profile (:func:`edge.installer.profilefile.check`)."""
        idents = tuple(
            Ident(
                e["name"],
                e["fc"],
                e["addr"],
                e["type"],
                e["count"],
                e["order"],
                e.get("expect"),
                dict(e.get("codes", {})),
            )
            for e in profile["ident"]
        )
        return cls(
            profile["model"],
            tuple(Point.from_profile(p) for p in profile["points"]),
            idents,
            profile["mei"],
            profile["max_gap"],
            profile["status"] or "",
            profile["baud"] or 9600,
        )

    def point(self, name: str) -> Point:
        """The point called ``name``; ``KeyError`` if the model has none."""
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)

    @property
    def function_codes(self) -> frozenset[int]:
        """Read function codes the model answers (43 when it has device identification)."""
        codes = {p.fc for p in self.points} | {i.fc for i in self.idents}
        if self.mei:
            codes.add(0x2B)
        return frozenset(codes)

    def image(
        self, raw: dict[str, int | float], unit: int, baud: int, serial: int
    ) -> dict[int, dict[int, int]]:
        """Raw point values -> ``{fc: {address: word_or_bit}}`` as served on the wire."""
        table: dict[int, dict[int, int]] = {fc: {} for fc in (1, 2, 3, 4)}
        for point in self.points:
            for offset, word in enumerate(point.words(raw[point.name])):
                table[point.fc][point.address + offset] = word
        for ident in self.idents:
            for offset, word in enumerate(ident.words(unit, baud, serial)):
                table[ident.fc][ident.address + offset] = word
        return table

    def serves(self, table: dict[int, int], address: int, count: int) -> list[int] | None:
        """The words of ``address .. address+count-1``, or None for an illegal address.

        A read may span unused addresses between mapped ones when the
        profile's ``max_gap`` says the device allows it (they read 0);
        with ``max_gap`` 0 only mapped addresses are served.
        """
        if not table:
            return None
        last = address + count - 1
        if self.max_gap == 0 or address < min(table) or last > max(table):
            if any(a not in table for a in range(address, last + 1)):
                return None
        return [table.get(a, 0) for a in range(address, last + 1)]


@functools.cache
def model(name: str) -> Model:
    """The built-in model ``name``; ``ConfigError`` if there is no such profile."""
    try:
        return Model.from_profile(profilefile.builtin(name))
    except ProfileError as err:
        raise ConfigError(str(err)) from None


def names() -> list[str]:
    """Names of the built-in models, sorted."""
    return edge_profiles.models_in(edge_profiles.BUILTIN_DIR)


def models() -> dict[str, Model]:
    """Every built-in model by name."""
    return {name: model(name) for name in names()}
