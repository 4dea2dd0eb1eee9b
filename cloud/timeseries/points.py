"""Value types of the time-series interface and their validation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from cloud.errors import InvalidValue
from protocol.limits import MAX_STR, MAX_TID

MAX_TS = 2**33  # year 2242: far enough, and catches milliseconds passed as seconds

Instant = datetime | int | float


def to_epoch(value: Instant) -> int:
    """Whole epoch seconds (floor) of an aware datetime or a number of seconds.

    Raises :class:`InvalidValue` for naive datetimes, bools, NaN and values
    outside ``0 <= ts < 2**33``.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidValue(f"naive datetime {value.isoformat()}")
        ts = math.floor(value.timestamp())
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"timestamp must be a datetime or epoch seconds, got {value!r}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(f"timestamp {value!r}")
    else:
        ts = math.floor(value)
    if not 0 <= ts < MAX_TS:
        raise InvalidValue(f"timestamp {ts} outside 0..2**33 (milliseconds passed as seconds?)")
    return ts


def check_series(terminal: str, channel: str) -> None:
    """Raise :class:`InvalidValue` unless both names are storable by every backend."""
    if not 0 < len(terminal) <= MAX_TID or not terminal.isprintable():
        raise InvalidValue(f"terminal {terminal!r}: 1..{MAX_TID} printable characters")
    if not 0 < len(channel.encode("utf-8")) <= MAX_STR or not channel.isprintable():
        raise InvalidValue(f"channel {channel!r}: 1..{MAX_STR} bytes, printable")


class _PointFields(NamedTuple):
    terminal: str
    channel: str
    ts: int
    value: float
    quality: int = 0
    historical: bool = False


class Point(_PointFields):
    """One sample. ``ts`` may be given as an aware datetime or epoch seconds
    and is stored as whole epoch seconds (sub-second parts are dropped).

    Raises :class:`InvalidValue` on construction for a bad name, timestamp,
    non-finite value or a quality outside 0..2**31-1.

    An immutable named tuple: a store handles hundreds of thousands per
    second, and a tuple is several times cheaper to make and read than a
    frozen dataclass. Code that has validated every field already (the
    ingest) may build one without the checks: ``tuple.__new__(Point, fields)``.
    """

    __slots__ = ()

    def __new__(  # noqa: PLR0917
        cls,
        terminal: str,
        channel: str,
        ts: Instant,
        value: float,
        quality: int = 0,
        historical: bool = False,
    ) -> Point:
        check_series(terminal, channel)
        epoch = to_epoch(ts)
        try:
            number = float(value)
        except (TypeError, ValueError) as err:
            raise InvalidValue(f"value {value!r} is not a number") from err
        if not math.isfinite(number):
            raise InvalidValue(f"value {number} is not finite")
        if isinstance(quality, bool) or not 0 <= int(quality) < 2**31:
            raise InvalidValue(f"quality {quality!r} outside 0..2**31-1")
        return super().__new__(
            cls, terminal, channel, epoch, number, int(quality), bool(historical)
        )

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)

    @property
    def key(self) -> tuple[str, str, int]:
        return self[:3]


@dataclass(frozen=True, slots=True)
class Bucket:
    """Aggregate of the samples in one bucket; ``start`` is epoch seconds."""

    start: int
    min: float
    max: float
    mean: float
    count: int

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.start, UTC)


@dataclass(frozen=True)
class QueryResult:
    """Answer of :meth:`TimeSeriesStore.query`: either ``points`` (``raw``)
    or ``buckets`` of ``width`` seconds."""

    raw: bool
    width: int | None
    points: Sequence[Point] = field(default_factory=tuple)
    buckets: Sequence[Bucket] = field(default_factory=tuple)
