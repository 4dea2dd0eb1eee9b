"""Sensor profiles: register maps as data files, their validation, read plans and decoding.

A profile is one JSON object per sensor model. The built-in ones are the
files in ``edge/models/`` (``docs/sensors.md`` documents each device and
the published map it comes from); a site adds models without a code change
by putting ``<MODEL>.json`` files in the ``profiles/`` directory beside its
``site.json`` (or, for small maps, inline in the site's ``profiles`` list)::

    {"model": "XY-MD02", "max_gap": 4,
     "points": [{"name": "t", "fc": 4, "addr": 1, "type": "s16",
                 "exp": -1, "unit": "degC", "kind": "temperature"}, ...]}

Point keys: ``name``, ``fc`` (1 coils, 2 discrete inputs, 3 holding, 4 input
registers), ``addr``, ``type`` (u16 s16 u32 s32 f32 bit), ``order`` for 32-bit
types (``ABCD`` high word first, big-endian bytes, the default; ``CDAB`` word
swapped; ``BADC`` byte swapped; ``DCBA`` both), ``exp`` (engineering value =
raw * 10**exp), ``unit``, ``kind``, optional ``label``, optional ``scale``
/ ``offset`` for maps that are not decimal (the value becomes the float
``raw * scale + offset`` and ``exp`` must be 0), and optional ``range``
(``[low, high]``, the plausible engineering values the installer's probe
checks). Profile keys: ``model`` (1..32 of ``A-Z a-z 0-9 - _ .``, also the
file name), ``points``, optional ``max_gap`` (unused registers a single read
may span, default 4; 0 for devices that reject reads across unmapped
addresses), ``label``, and the keys the installer's tools use and the
terminal ignores: ``status``, ``source``, ``baud``, ``ident``, ``mei``
(checked by ``edge/installer/profilefile.py``).

The terminal loads only the profiles its wiring names, one file at a time,
and keeps only what it polls with (no labels, sources or identification),
plus each profile's ``status``, which its birth frame reports: a built-in
file's own (``documented``, ``reference`` or ``test``; docs/sensors.md),
``site`` for every profile the site supplied, whatever the file claims,
since nobody but the site has checked that map.
"""

import json
import os

from edge.errors import ConfigError

# decode_point is part of this module's interface; it lives with the codec,
# which a terminal keeps loaded while this module is unloaded after boot.
from edge.modbus import T_BIT, T_F32, T_S16, T_S32, T_U16, T_U32, decode_point  # noqa: F401

TYPES = ("u16", "s16", "u32", "s32", "f32", "bit")  # a type's code is its index here
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
    "range",
)
_PROFILE_KEYS = ("model", "points", "max_gap", "label")
# Read by the installer's probe and the simulator, never by the terminal.
INFO_KEYS = ("status", "source", "baud", "ident", "mei")
MODEL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
SITE_DIR = "profiles"  # beside site.json: the site's own profile files


def _here():
    # Where this module was loaded from, so the data files are found on the
    # board (edge/profiles.mpy) and in a checkout alike. No I/O.
    f = globals().get("__file__") or "edge/profiles.py"
    i = f.rfind("/")
    return f[:i] if i >= 0 else "."


BUILTIN_DIR = _here() + "/models"


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
    # label and range are for people and the probe; the terminal drops them
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
    """Check a profile and return the normalised copy the terminal polls with.

    Raises ConfigError naming the model, the point and the key at fault:
    unknown keys (typos), wrong types, out-of-range addresses, a bit type on
    register function codes or the reverse, duplicate point names,
    ``order`` on a 16-bit type, ``scale`` together with ``exp``, a model
    name that cannot be a file name. The copy has defaults filled in and no
    labels or installer keys (:data:`INFO_KEYS`, whose contents the
    installer checks). The input is not modified.
    """
    if not isinstance(profile, dict):
        raise ConfigError("profile must be an object, got %r" % (profile,))
    model = profile.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 32:
        raise ConfigError(
            "profile: 'model' must be a string of 1..32 characters, got %r" % (model,)
        )
    for c in model:
        if c not in MODEL_CHARS:
            raise ConfigError("profile %r: 'model' may only contain A-Z a-z 0-9 - _ ." % model)
    where = "profile %r" % model
    for key in profile:
        if key not in _PROFILE_KEYS and key not in INFO_KEYS:
            raise ConfigError(
                "%s: unknown key %r (allowed: %s)"
                % (where, key, ", ".join(_PROFILE_KEYS + INFO_KEYS))
            )
    if not isinstance(profile.get("label", ""), str):
        raise ConfigError("%s: 'label' must be a string" % where)
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
    return {"model": model, "max_gap": gap, "points": out_points}


def read_file(path):
    """The JSON object in the profile file at ``path``; None when there is no such file.

    Raises ConfigError when the file exists but is not a JSON object.
    """
    try:
        f = open(path)
    except OSError:
        return None
    problem = None
    try:
        obj = json.load(f)
    except ValueError:
        problem = "not valid JSON"
    finally:
        f.close()
    # raised outside the except: MicroPython warns on exception chaining
    if problem is None and not isinstance(obj, dict):
        problem = "must hold one JSON object"
    if problem is not None:
        raise ConfigError("%s: %s" % (path, problem))
    return obj


def _load(directory, model):
    path = directory + "/" + model + ".json"
    raw = read_file(path)
    if raw is not None and raw.get("model") != model:
        raise ConfigError(
            "%s: holds model %r; the file name must be the model" % (path, raw.get("model"))
        )
    return raw


def models_in(directory):
    """Model names of the ``*.json`` files in ``directory`` (none when it is missing), sorted."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".json"))


def profile_table(site_profiles=None, models=None, site_dir=None):
    """Validated profiles as ``{model: profile}``.

    ``models`` lists the models wanted (the wiring's; None: every profile
    there is); a model nobody defines is left out, so the caller can say
    where it was asked for. Each comes from ``site_profiles`` (a list of
    inline profiles), else the file ``<site_dir>/<model>.json``, else the
    built-in file in :data:`BUILTIN_DIR`. Raises ConfigError for an invalid
    profile or file, or when a site defines a model twice or one that is
    built in (a site's variant of a built-in model gets its own name).
    """
    inline = {}
    extra = site_profiles or []
    if not isinstance(extra, list):
        raise ConfigError("site profiles must be a list, got %r" % (extra,))
    for raw in extra:
        p = validate_profile(raw)
        if p["model"] in inline:
            raise ConfigError("profile %r is defined twice" % p["model"])
        inline[p["model"]] = p
    if models is None:
        models = list(inline) + models_in(BUILTIN_DIR)
        if site_dir:
            models += models_in(site_dir)
    table = {}
    for model in models:
        if model in table:
            continue
        p = inline.get(model)
        raw = _load(site_dir, model) if site_dir else None
        if raw is not None:
            if p is not None:
                raise ConfigError("profile %r is defined twice (inline and in a file)" % model)
            p = validate_profile(raw)
        if p is not None:
            if _exists(BUILTIN_DIR + "/" + model + ".json"):
                raise ConfigError(
                    "profile %r is built in; give the site's variant its own name" % model
                )
            p["status"] = "site"
            table[model] = p
            continue
        raw = _load(BUILTIN_DIR, model)
        if raw is not None:
            p = validate_profile(raw)
            # A shipped map with no status on record has no published source either.
            p["status"] = raw.get("status") or "reference"
            table[model] = p
    return table


def _exists(path):
    try:
        open(path).close()
    except OSError:
        return False
    return True


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
