"""Backend-neutral backup format of the time-series store.

JSON Lines, UTF-8. The first line is a header, every further line one sample::

    {"format": "mimamori-timeseries", "version": 1}
    {"t": "T0001", "c": "ior", "ts": 1735689600, "v": 0.25, "q": 0, "h": false}

``ts`` is epoch seconds (UTC); ``v`` is written with Python's shortest
round-trip float repr, so an export/import cycle is bit-exact. Because the
format does not depend on the backend, exporting from SQL and importing into
InfluxDB (or back) is also how a site moves between backends. Wrap the file
in ``gzip.open`` for compression; this module only sees bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from cloud.errors import BackupFormatError, InvalidValue
from cloud.timeseries.points import Point

FORMAT = "mimamori-timeseries"
VERSION = 1


def dump(points: Iterable[Point], fileobj: IO[bytes]) -> int:
    """Write the header and ``points``; return how many points were written."""
    fileobj.write(_line({"format": FORMAT, "version": VERSION}))
    n = 0
    for p in points:
        fileobj.write(
            _line(
                {
                    "t": p.terminal,
                    "c": p.channel,
                    "ts": p.ts,
                    "v": p.value,
                    "q": p.quality,
                    "h": p.historical,
                }
            )
        )
        n += 1
    return n


def load(fileobj: IO[bytes]) -> Iterator[Point]:
    """Yield the points of an export, validating as it goes.

    Raises :class:`BackupFormatError` naming the line for a missing or foreign
    header, a newer version, malformed JSON or an invalid sample.
    """
    header = _parse(fileobj.readline(), 1)
    if header.get("format") != FORMAT:
        raise BackupFormatError("not a mimamori time-series export (bad header)")
    if header.get("version") != VERSION:
        raise BackupFormatError(f"export version {header.get('version')!r}, need {VERSION}")
    for lineno, raw in enumerate(fileobj, start=2):
        if not raw.strip():
            continue
        rec = _parse(raw, lineno)
        if not _typed(rec):
            raise BackupFormatError(f"line {lineno}: fields t, c, ts, v, q, h missing or mistyped")
        try:
            yield Point(rec["t"], rec["c"], rec["ts"], rec["v"], rec["q"], rec["h"])
        except (KeyError, TypeError, InvalidValue) as err:
            raise BackupFormatError(f"line {lineno}: bad sample: {err}") from err


def _typed(rec: dict[str, Any]) -> bool:
    # JSON's loose types must not slip through Point's coercions ("false" is truthy).
    number = (int, float)
    return (
        isinstance(rec.get("t"), str)
        and isinstance(rec.get("c"), str)
        and type(rec.get("ts")) is int
        and isinstance(rec.get("v"), number)
        and not isinstance(rec.get("v"), bool)
        and type(rec.get("q")) is int
        and isinstance(rec.get("h"), bool)
    )


def _parse(raw: bytes, lineno: int) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise BackupFormatError(f"line {lineno}: not JSON: {err}") from err
    if not isinstance(rec, dict):
        raise BackupFormatError(f"line {lineno}: not a JSON object")
    return rec


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
