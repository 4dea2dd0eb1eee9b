"""Sensor profile files as the installer's tools read them: JSON or TOML, fully checked.

The terminal validates what it polls with (:func:`edge.profiles.validate_profile`)
and ignores the keys meant for people and tools. This module checks those
too, so a profile file is refused here, before it reaches a board:

- ``status``: ``documented`` (a manufacturer's published map), ``reference``
  (an invented stand-in for a class of device, shown as such) or ``test``
  (an invented map for tests); absent for a site's own profile.
- ``source``: the document (and its revision) the map comes from.
- ``baud``: the device's factory baud rate, which the probe tries first.
- ``ident``: registers the device documents for identifying it, each
  ``{"name", "fc" (3|4), "addr", "type" (u16 s16 u32 s32 f32 text),
  "order" (32-bit), "count" (text: registers, 2 ASCII characters each),
  "expect", "codes"}``. ``expect`` is the value a genuine device holds: a
  number, a text, ``"unit"`` (the register holds the device's own Modbus
  address) or ``"baud"`` (it holds the code of the baud rate in use;
  ``codes`` maps each rate to its code). Without ``expect`` the value is
  only shown (a serial number, a firmware version).
- ``mei``: what the device answers to Read Device Identification (FC 43 /
  MEI 14): ``{"vendor", "product", "revision"}``, ``product`` required.
- point ``range``: ``[low, high]`` plausible engineering values.

A TOML file has the same keys (``[[points]]`` and ``[[ident]]`` tables).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from edge import profiles
from edge.errors import ConfigError
from edge.installer.errors import ProfileError

STATUSES = ("documented", "reference", "test")
# What the tools print beside a profile whose map is not a published one; the
# web site says the same (cloud/web/templating.py, PROFILE_HINTS).
STATUS_NOTES = {
    "reference": "reference profile: its register map is not a manufacturer's published map",
    "test": "test device: an invented map for tests and the demo, no such product exists",
}
IDENT_TYPES = ("u16", "s16", "u32", "s32", "f32", "text")
IDENT_KEYS = ("name", "fc", "addr", "type", "order", "count", "expect", "codes")
MEI_KEYS = ("vendor", "product", "revision")
BAUDS = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)
MAX_TEXT_REGISTERS = 16

# Plausible engineering values by (kind, unit) when a point gives no range:
# what an installer would call "clearly not this quantity".
PLAUSIBLE: dict[tuple[str, str], tuple[float, float]] = {
    ("voltage", "V"): (80.0, 480.0),
    ("frequency", "Hz"): (45.0, 65.0),
    ("humidity", "%RH"): (0.0, 100.0),
    ("temperature", "degC"): (-40.0, 125.0),
    ("pf", ""): (-1.0, 1.0),
    ("current", "A"): (0.0, 10000.0),
    ("power", "kW"): (-100000.0, 100000.0),
    ("energy", "kWh"): (0.0, 1e10),
    ("leak", "mA"): (0.0, 10000.0),
}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)  # type: ignore[arg-type]


def _check_ident(where: str, entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ConfigError("%s: must be an object" % where)
    name = entry.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise ConfigError("%s: 'name' must be a string of 1..32 characters" % where)
    where = "%s %r" % (where, name)
    for key in entry:
        if key not in IDENT_KEYS:
            raise ConfigError(
                "%s: unknown key %r (allowed: %s)" % (where, key, ", ".join(IDENT_KEYS))
            )
    fc = entry.get("fc")
    if fc not in (3, 4) or not _is_int(fc):
        raise ConfigError("%s: 'fc' must be 3 or 4, got %r" % (where, fc))
    typ = entry.get("type")
    if typ not in IDENT_TYPES:
        raise ConfigError(
            "%s: 'type' must be one of %s, got %r" % (where, " ".join(IDENT_TYPES), typ)
        )
    if typ == "text":
        given = entry.get("count")
        if (
            not isinstance(given, int)
            or isinstance(given, bool)
            or not 1 <= given <= MAX_TEXT_REGISTERS
        ):
            raise ConfigError(
                "%s: a text needs 'count', 1..%d registers" % (where, MAX_TEXT_REGISTERS)
            )
        count = given
    elif "count" in entry:
        raise ConfigError("%s: 'count' applies to text only" % where)
    else:
        count = profiles.WIDTHS[profiles.TYPES.index(typ)]
    addr = entry.get("addr")
    if not isinstance(addr, int) or isinstance(addr, bool) or not 0 <= addr <= 0x10000 - count:
        raise ConfigError(
            "%s: 'addr' must be an integer 0..%d, got %r" % (where, 0x10000 - count, addr)
        )
    order = entry.get("order", "ABCD")
    if "order" in entry and (typ == "text" or count != 2):
        raise ConfigError("%s: 'order' applies to 32-bit types only" % where)
    if order not in profiles.ORDERS:
        raise ConfigError("%s: 'order' must be one of %s" % (where, " ".join(profiles.ORDERS)))
    expect = entry.get("expect")
    codes = entry.get("codes")
    if typ == "text":
        if expect is not None and (not isinstance(expect, str) or not expect.strip()):
            raise ConfigError("%s: a text's 'expect' must be a non-empty string" % where)
    elif expect is not None and expect not in ("unit", "baud") and not _is_number(expect):
        raise ConfigError(
            '%s: \'expect\' must be a number, "unit" or "baud", got %r' % (where, expect)
        )
    if (expect == "baud") != (codes is not None):
        raise ConfigError("%s: 'codes' goes with expect \"baud\", and only there" % where)
    norm_codes: dict[int, float] = {}
    if codes is not None:
        if not isinstance(codes, dict) or not codes:
            raise ConfigError("%s: 'codes' must map baud rates to codes" % where)
        for rate, code in codes.items():
            try:
                baud = int(rate)
            except ValueError:
                baud = -1
            if baud not in BAUDS or not _is_number(code):
                raise ConfigError(
                    "%s: 'codes' %r: %r must be a baud rate (%s) mapped to a number"
                    % (where, rate, code, " ".join(str(b) for b in BAUDS))
                )
            norm_codes[baud] = code
    out: dict[str, Any] = {"name": name, "fc": fc, "addr": addr, "type": typ, "count": count}
    out["order"] = order
    if expect is not None:
        out["expect"] = expect
    if norm_codes:
        out["codes"] = norm_codes
    return out


def _check_range(where: str, point: dict[str, Any]) -> None:
    rng = point.get("range")
    if rng is None:
        return
    if (
        not isinstance(rng, list)
        or len(rng) != 2
        or not all(_is_number(v) for v in rng)
        or not rng[0] < rng[1]
    ):
        raise ConfigError(
            "%s point %r: 'range' must be [low, high] with low < high" % (where, point.get("name"))
        )


def check(raw: object, name: str = "profile") -> dict[str, Any]:
    """The full profile, every key checked; ProfileError naming the file and the key.

    The result is a copy with the terminal's normalised ``points`` (see
    :func:`edge.profiles.validate_profile`) plus ``label``, ``status``,
    ``source``, ``baud``, ``ident`` (normalised entries), ``mei`` and each
    point's ``label`` and ``range`` (None when absent).
    """
    try:
        runtime = profiles.validate_profile(raw)
        assert isinstance(raw, dict)
        where = "profile %r" % raw["model"]
        status = raw.get("status")
        if status is not None and status not in STATUSES:
            raise ConfigError("%s: 'status' must be one of %s" % (where, ", ".join(STATUSES)))
        for key in ("source", "label"):
            if not isinstance(raw.get(key, ""), str):
                raise ConfigError("%s: %r must be a string" % (where, key))
        baud = raw.get("baud")
        if baud is not None and baud not in BAUDS:
            raise ConfigError(
                "%s: 'baud' must be one of %s" % (where, " ".join(str(b) for b in BAUDS))
            )
        ident = raw.get("ident", [])
        if not isinstance(ident, list):
            raise ConfigError("%s: 'ident' must be a list" % where)
        idents = [_check_ident("%s ident %d" % (where, i), e) for i, e in enumerate(ident)]
        mei = raw.get("mei")
        if mei is not None:
            if not isinstance(mei, dict) or not isinstance(mei.get("product"), str):
                raise ConfigError("%s: 'mei' must be an object with a 'product' string" % where)
            for key, value in mei.items():
                if key not in MEI_KEYS or not isinstance(value, str):
                    raise ConfigError(
                        "%s: 'mei' holds strings %s only" % (where, ", ".join(MEI_KEYS))
                    )
        points = []
        for given, norm in zip(raw["points"], runtime["points"], strict=True):
            _check_range(where, given)
            point = dict(norm)
            point["label"] = given.get("label", "")
            point["range"] = tuple(given["range"]) if "range" in given else None
            points.append(point)
    except ConfigError as err:
        raise ProfileError("%s: %s" % (name, err)) from err
    return {
        "model": runtime["model"],
        "max_gap": runtime["max_gap"],
        "points": points,
        "label": raw.get("label", ""),
        "status": status,
        "source": raw.get("source", ""),
        "baud": baud,
        "ident": idents,
        "mei": mei,
    }


def read(path: Path | str) -> dict[str, Any]:
    """The raw object of a profile file (``.json`` or ``.toml``); ProfileError otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise ProfileError("profile file %s does not exist" % path) from err
    except OSError as err:
        raise ProfileError("cannot read profile file %s: %s" % (path, err.strerror)) from err
    try:
        if path.suffix == ".toml":
            raw: object = tomllib.loads(data.decode("utf-8"))
        elif path.suffix == ".json":
            raw = json.loads(data.decode("utf-8"))
        else:
            raise ProfileError("profile file %s: name it .json or .toml" % path)
    except UnicodeDecodeError as err:
        raise ProfileError("profile file %s is not UTF-8 text" % path) from err
    except json.JSONDecodeError as err:
        raise ProfileError(
            "profile file %s is not valid JSON (line %d, column %d: %s)"
            % (path, err.lineno, err.colno, err.msg)
        ) from err
    except tomllib.TOMLDecodeError as err:
        raise ProfileError("profile file %s is not valid TOML: %s" % (path, err)) from err
    if not isinstance(raw, dict):
        raise ProfileError("profile file %s must hold one object (a profile)" % path)
    return raw


def load(path: Path | str) -> dict[str, Any]:
    """Read and fully check one profile file; ProfileError names the file and the problem."""
    return check(read(path), str(path))


def builtin(model: str) -> dict[str, Any]:
    """The full built-in profile ``model``; ProfileError when there is none."""
    path = Path(profiles.BUILTIN_DIR) / (model + ".json")
    if not path.is_file():
        known = ", ".join(profiles.models_in(profiles.BUILTIN_DIR))
        raise ProfileError("no built-in profile %r (built in: %s)" % (model, known))
    return load(path)


def catalogue(extra: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every built-in profile plus ``extra`` (checked full profiles), by model.

    ProfileError when an extra profile reuses a built-in model name or
    another extra's: the probe could not say which one it means.
    """
    table = {m: builtin(m) for m in profiles.models_in(profiles.BUILTIN_DIR)}
    for p in extra or []:
        if p["model"] in table:
            raise ProfileError(
                "profile %r is built in or given twice; give the site's variant its own name"
                % p["model"]
            )
        table[p["model"]] = p
    return table


def board_json(raw: dict[str, Any]) -> bytes:
    """The bytes of ``profiles/<MODEL>.json`` on the board: the file's object, compact JSON."""
    return json.dumps(raw, sort_keys=True, separators=(",", ":")).encode("utf-8")


def plausible_range(point: dict[str, Any]) -> tuple[float, float] | None:
    """The point's ``range``, else the default for its kind and unit, else None."""
    if point.get("range") is not None:
        low, high = point["range"]
        return float(low), float(high)
    return PLAUSIBLE.get((point.get("kind", ""), point.get("unit", "")))


def status_note(status: str | None) -> str:
    """One phrase for a profile's status: the warning for a reference map or
    a test device, ``site profile`` for a site's own file without a status,
    ``documented`` otherwise."""
    if status is None:
        return "site profile"
    return STATUS_NOTES.get(status, status)
