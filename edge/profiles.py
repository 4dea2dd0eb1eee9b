"""Sensor profiles: register maps as data, their validation, read plans and decoding.

A profile is JSON-able data, so a site adds a sensor model in its config
without a code change::

    {"model": "IM-100", "code": 0x1001, "max_gap": 4,
     "points": [{"name": "io", "fc": 4, "addr": 0, "type": "u16",
                 "exp": -1, "unit": "mA", "kind": "leak"}, ...]}

Point keys: ``name``, ``fc`` (1 coils, 2 discrete inputs, 3 holding, 4 input
registers), ``addr``, ``type`` (u16 s16 u32 s32 f32 bit), ``order`` for 32-bit
types (``ABCD`` high word first, big-endian bytes, the default; ``CDAB`` word
swapped; ``BADC`` byte swapped; ``DCBA`` both), ``exp`` (engineering value =
raw * 10**exp), ``unit``, ``kind``, optional ``label``, and optional ``scale``
/ ``offset`` for maps that are not decimal (the value becomes the float
``raw * scale + offset`` and ``exp`` must be 0). Profile keys: ``model``,
``code`` (the value of holding register 9000, or absent), ``points``,
optional ``max_gap`` (unused registers a single read may span, default 4;
0 for devices that reject reads across unmapped addresses), ``label``.

The built-in profiles are the models in ``docs/sensors.md``.
"""

import struct

from edge.errors import ConfigError

MODEL_REGISTER = 9000  # FC 3: every supported model answers its model code here
FIRMWARE_REGISTER = 9001  # FC 3: firmware revision

TYPES = ("u16", "s16", "u32", "s32", "f32", "bit")
T_U16 = 0
T_S16 = 1
T_U32 = 2
T_S32 = 3
T_F32 = 4
T_BIT = 5
WIDTHS = (1, 1, 2, 2, 2, 1)
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
DEFAULT_GAP = 4
MAX_GAP = 32
MAX_REGISTERS = 125
MAX_BITS = 2000

_POINT_KEYS = (
    "name",
    "fc",
    "addr",
    "type",
    "order",
    "exp",
    "unit",
    "kind",
    "label",
    "scale",
    "offset",
)
_PROFILE_KEYS = ("model", "code", "points", "max_gap", "label")


_COLUMNS = ("name", "addr", "type", "exp", "unit", "kind")


def _points(fc, rows, order=None):
    """Point dicts from table rows laid out like docs/sensors.md."""
    out = []
    for row in rows:
        p = {"fc": fc}
        for j in range(len(_COLUMNS)):
            p[_COLUMNS[j]] = row[j]
        if order is not None and p["type"] in ("u32", "s32", "f32"):
            p["order"] = order
        out.append(p)
    return out


def _power_meter(model, code, order):
    rows = (
        ("kw", 0, "s32", -2, "kW", "power"),
        ("kwh", 2, "u32", -1, "kWh", "energy"),
        ("v", 4, "u16", -1, "V", "voltage"),
        ("a", 5, "u16", -2, "A", "current"),
        ("pf", 6, "s16", -3, "", "pf"),
    )
    return {"model": model, "code": code, "points": _points(4, rows, order)}


def builtin_profiles():
    """The five models of docs/sensors.md, as a fresh list of profile dicts.

    Fresh on every call so no caller can change another's copy.
    """
    im100 = (
        ("io", 0, "u16", -1, "mA", "leak"),
        ("ior", 1, "u16", -1, "mA", "leak"),
        ("v", 2, "u16", -1, "V", "voltage"),
    )
    th10 = (
        ("t", 0, "s16", -1, "degC", "temperature"),
        ("rh", 1, "u16", -1, "%RH", "humidity"),
    )
    di8 = [("di%d" % (i + 1), i, "bit", 0, "", "contact") for i in range(8)]
    return [
        {"model": "IM-100", "code": 0x1001, "points": _points(4, im100)},
        _power_meter("PM-300", 0x2001, "ABCD"),
        _power_meter("PM-310", 0x2002, "CDAB"),
        {"model": "TH-10", "code": 0x3001, "points": _points(4, th10)},
        {"model": "DI-8", "code": 0x4001, "points": _points(2, di8)},
    ]


def _int(v):
    # bool is an int subclass in Python; true/false in a register map is a typo.
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return _int(v) or isinstance(v, float)


def _validate_point(where, p):
    if not isinstance(p, dict):
        raise ConfigError("%s: a point must be an object, got %r" % (where, p))
    name = p.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        raise ConfigError("%s: 'name' must be a string of 1..32 characters" % where)
    where = "%s %r" % (where, name)
    for key in p:
        if key not in _POINT_KEYS:
            raise ConfigError(
                "%s: unknown key %r (allowed: %s)" % (where, key, ", ".join(_POINT_KEYS))
            )
    fc = p.get("fc")
    if fc not in (1, 2, 3, 4) or not _int(fc):
        raise ConfigError("%s: 'fc' must be 1, 2, 3 or 4, got %r" % (where, fc))
    typ = p.get("type")
    if typ not in TYPES:
        raise ConfigError("%s: 'type' must be one of %s, got %r" % (where, " ".join(TYPES), typ))
    t = TYPES.index(typ)
    if (t == T_BIT) != (fc <= 2):
        raise ConfigError("%s: type 'bit' goes with fc 1 or 2 and only there (fc %d)" % (where, fc))
    addr = p.get("addr", -1)
    if not _int(addr) or not 0 <= addr <= 0x10000 - WIDTHS[t]:
        raise ConfigError(
            "%s: 'addr' must be an integer 0..%d, got %r" % (where, 0x10000 - WIDTHS[t], addr)
        )
    order = p.get("order", "ABCD")
    if "order" in p and WIDTHS[t] != 2:
        raise ConfigError("%s: 'order' applies to 32-bit types only" % where)
    if order not in ORDERS:
        raise ConfigError(
            "%s: 'order' must be one of %s, got %r" % (where, " ".join(ORDERS), order)
        )
    exp = p.get("exp", 0)
    if not _int(exp) or not -9 <= exp <= 9:
        raise ConfigError("%s: 'exp' must be an integer -9..9, got %r" % (where, exp))
    for key in ("unit", "kind", "label"):
        if not isinstance(p.get(key, ""), str):
            raise ConfigError("%s: %r must be a string" % (where, key))
    out = {
        "name": name,
        "fc": fc,
        "addr": addr,
        "type": typ,
        "exp": exp,
        "unit": p.get("unit", ""),
        "kind": p.get("kind", ""),
    }
    if WIDTHS[t] == 2:
        out["order"] = order
    if "label" in p:
        out["label"] = p["label"]
    if "scale" in p or "offset" in p:
        scale = p.get("scale", 1)
        offset = p.get("offset", 0)
        if not _number(scale) or not _number(offset) or scale == 0:
            raise ConfigError("%s: 'scale' must be a non-zero number and 'offset' a number" % where)
        if t == T_BIT:
            raise ConfigError("%s: 'scale'/'offset' do not apply to bits" % where)
        if exp != 0:
            raise ConfigError(
                "%s: with 'scale'/'offset' the value is already scaled; 'exp' must be 0" % where
            )
        out["scale"] = scale
        out["offset"] = offset
    return out


def validate_profile(profile):
    """Check a profile and return a normalised copy (defaults filled in).

    Raises ConfigError naming the model, the point and the
    key at fault: unknown keys (typos), wrong types, out-of-range addresses,
    a bit type on register function codes or the reverse, duplicate point
    names, ``order`` on a 16-bit type, ``scale`` together with ``exp``.
    The input is not modified.
    """
    if not isinstance(profile, dict):
        raise ConfigError("profile must be an object, got %r" % (profile,))
    model = profile.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 32:
        raise ConfigError(
            "profile: 'model' must be a string of 1..32 characters, got %r" % (model,)
        )
    where = "profile %r" % model
    for key in profile:
        if key not in _PROFILE_KEYS:
            raise ConfigError(
                "%s: unknown key %r (allowed: %s)" % (where, key, ", ".join(_PROFILE_KEYS))
            )
    code = profile.get("code")
    if code is not None and (not _int(code) or not 0 <= code <= 0xFFFF):
        raise ConfigError("%s: 'code' must be an integer 0..65535, got %r" % (where, code))
    gap = profile.get("max_gap", DEFAULT_GAP)
    if not _int(gap) or not 0 <= gap <= MAX_GAP:
        raise ConfigError("%s: 'max_gap' must be an integer 0..%d, got %r" % (where, MAX_GAP, gap))
    points = profile.get("points")
    if not isinstance(points, list) or not points:
        raise ConfigError("%s: 'points' must be a non-empty list" % where)
    out_points = []
    names = set()
    for i, p in enumerate(points):
        q = _validate_point("%s point %d" % (where, i), p)
        if q["name"] in names:
            raise ConfigError("%s: duplicate point name %r" % (where, q["name"]))
        names.add(q["name"])
        out_points.append(q)
    out = {"model": model, "code": code, "max_gap": gap, "points": out_points}
    if "label" in profile:
        if not isinstance(profile["label"], str):
            raise ConfigError("%s: 'label' must be a string" % where)
        out["label"] = profile["label"]
    return out


def profile_table(site_profiles=None):
    """Built-in plus site profiles, validated, as ``{model: profile}``.

    Raises ConfigError on an invalid profile, or when two profiles share a
    model name or a model code (the probe could not tell them apart); a site
    that needs a variant of a built-in model gives it its own name.
    """
    table = {}  # type: dict
    codes = {}  # type: dict
    extra = site_profiles or []
    if not isinstance(extra, list):
        raise ConfigError("site profiles must be a list, got %r" % (extra,))
    for raw in builtin_profiles() + extra:
        p = validate_profile(raw)
        if p["model"] in table:
            raise ConfigError("profile %r is defined twice" % p["model"])
        code = p["code"]
        if code is not None:
            if code in codes:
                raise ConfigError(
                    "profiles %r and %r share model code 0x%04x" % (codes[code], p["model"], code)
                )
            codes[code] = p["model"]
        table[p["model"]] = p
    return table


def find_by_code(table, code):
    """The profile whose model code (holding register 9000) is ``code``, or None."""
    for p in table.values():
        if p["code"] == code:
            return p
    return None


def plan_reads(profile):
    """Group a validated profile's points into as few read requests as possible.

    Returns a tuple of ``(fc, addr, count, items)``; points of one function
    code whose addresses are at most ``max_gap`` unused items apart share a
    request, up to 125 registers or 2000 bits. ``items`` is a tuple of
    ``(point_index, type_code, offset, order_code, scale, offset_add)``
    (``scale`` None when the point is not scaled) ready for
    :func:`decode_point`. Compute it once per configuration: the poll loop
    only walks it.
    """
    gap = profile["max_gap"]
    points = profile["points"]
    plan = []
    for fc in (1, 2, 3, 4):
        mine = [(p["addr"], i) for i, p in enumerate(points) if p["fc"] == fc]
        mine.sort()
        limit = MAX_BITS if fc <= 2 else MAX_REGISTERS
        group = []  # type: list
        start = end = 0
        for addr, i in mine:
            width = WIDTHS[TYPES.index(points[i]["type"])]
            if group and (addr - end > gap or addr + width - start > limit):
                plan.append(_group(fc, start, end - start, group, points))
                group = []
            if not group:
                start = addr
                end = addr
            group.append(i)
            end = max(end, addr + width)
        if group:
            plan.append(_group(fc, start, end - start, group, points))
    return tuple(plan)


def _group(fc, start, count, indexes, points):
    items = []
    for i in indexes:
        p = points[i]
        scale = p.get("scale")
        offset = p.get("offset", 0)
        if scale is None and "offset" in p:
            scale = 1
        items.append(
            (
                i,
                TYPES.index(p["type"]),
                p["addr"] - start,
                ORDERS.index(p.get("order", "ABCD")),
                scale,
                offset,
            )
        )
    return (fc, start, count, tuple(items))


def _swap(w):
    return (w & 0xFF) << 8 | w >> 8


def decode_point(item, regs):
    """The value of one planned point from the words (or bits) of its request.

    Integer types give ints (raw counts; apply the point's ``exp`` to get
    engineering units), ``f32`` gives a float, a scaled point gives
    ``raw * scale + offset`` as a float. Never raises for any 16-bit input.
    """
    t = item[1]
    o = item[2]
    v = regs[o]
    if t == T_S16:
        if v & 0x8000:
            v -= 0x10000
    elif t >= T_U32 and t != T_BIT:
        a = v
        b = regs[o + 1]
        order = item[3]
        if order == 1:
            a, b = b, a
        elif order == 2:
            a = _swap(a)
            b = _swap(b)
        elif order == 3:
            a, b = _swap(b), _swap(a)
        v = a << 16 | b
        if t == T_S32 and v & 0x80000000:
            v -= 0x100000000
        elif t == T_F32:
            v = struct.unpack(">f", struct.pack(">I", v))[0]
    scale = item[4]
    if scale is not None:
        return v * scale + item[5]
    return v
