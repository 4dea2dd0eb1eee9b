"""The cloud part of a terminal's configuration: its schema and validator.

The cloud sends this document in the retained ``config`` frame
(``frames.py``: ``config {...}``); the terminal validates it, keeps it in
``cloud.json`` and answers with a ``cfgack``. Both sides run the same
:func:`validate_cloud`, so the web site refuses exactly what a terminal would
refuse. The terminal's own site part (``edge/config.py``) is checked with the
same small schema helpers below.

Document (every key but ``version`` optional)::

    {"version": 7,
     "sampling": {"leak1.ior": 10},          # seconds per channel; default site interval
     "thresholds": [{"channel": "leak1.ior", "cond": "leak", "warn": 30, "alarm": 50,
                     "hyst": 2, "on_delay": 600, "off_delay": 60, "count": 3,
                     "window": 3600,
                     "override": {"warn": 40, "until": 1767225600}}],
     "heartbeat": 300,                       # seconds between status frames
     "upload": 60}                           # seconds of samples per data frame; 0: each

Threshold semantics are in ``edge/alarms.py``. ``cond`` is ``hi``, ``lo`` or
``leak`` on a measured channel (``count``/``window`` only with ``leak``, both
or neither), ``contact`` on a contact channel (``warn``/``alarm`` are then
the contact state 0 or 1 that raises the level). At least one of ``warn``
and ``alarm`` is given; for ``hi``/``leak`` ``warn <= alarm``, for ``lo``
``warn >= alarm``. An override only moves levels the rule has, and ``until``
is Unix time.

Validators return a normalized copy (every optional key filled in) or raise
:class:`~protocol.errors.ConfigError` whose message is ``<path>: <problem>``,
e.g. ``cloud.thresholds[2].warn: must be a number``. Unknown keys are
errors, so a typo never silently disables an alarm.
"""

from protocol.errors import ConfigError
from protocol.limits import U32_MAX

MAX_THRESHOLDS = 128
MAX_DELAY = 86400  # one day
MAX_WINDOW = 7 * 86400
MAX_COUNT = 100
CONDS = ("hi", "lo", "leak", "contact")
CONTACT_KINDS = ("contact",)
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

# -- schema helpers ------------------------------------------------------------
# A section's spec is rows of (key, check, default); check(value, path) returns
# the normalized value. A default of REQUIRED makes the key mandatory.
REQUIRED = object()


def fail(path, problem):
    raise ConfigError("%s: %s" % (path, problem))


def mapping(v, path):
    if not isinstance(v, dict):
        fail(path, "must be an object")
    return v


def integer(lo, hi):
    def check(v, path):
        if type(v) is not int or not lo <= v <= hi:
            fail(path, "must be an integer %d..%d" % (lo, hi))
        return v

    return check


def number(v, path):
    # NaN is the one value unequal to itself; no math.isfinite on every port
    if type(v) not in (int, float) or v != v or v in (float("inf"), float("-inf")):  # noqa: PLR0124
        fail(path, "must be a number")
    return v


def number_range(lo, hi):
    def check(v, path):
        number(v, path)
        if not lo <= v <= hi:
            fail(path, "must be a number %s..%s" % (lo, hi))
        return v

    return check


def anything(v, path):
    return v


def boolean(v, path):
    if v is not True and v is not False:
        fail(path, "must be true or false")
    return v


def text(lo, hi, chars=None):
    def check(v, path):
        if not isinstance(v, str) or not lo <= len(v) <= hi:
            fail(path, "must be a string of %d..%d characters" % (lo, hi))
        if chars is not None:
            for c in v:
                if c not in chars:
                    fail(path, "may only contain A-Z a-z 0-9 _ -")
        return v

    return check


def choice(*options):
    def check(v, path):
        if v not in options or type(v) is bool:
            fail(path, "must be one of %s" % ", ".join([str(o) for o in options]))
        return v

    return check


def section(obj, path, spec):
    """Check ``obj`` against ``spec`` rows; return a new dict with defaults filled."""
    mapping(obj, path)
    known = [row[0] for row in spec]
    for key in obj:
        if key not in known:
            fail(join(path, key), "unknown key")
    out = {}
    for key, check, default in spec:
        # null means "not set", so a normalized config validates to itself
        if obj.get(key) is not None:
            out[key] = check(obj[key], join(path, key))
        elif default is REQUIRED:
            fail(join(path, key), "is required")
        else:
            out[key] = default
    return out


def join(path, key):
    return key if not path else path + "." + key


def sub(spec):
    def check(v, path):
        return section(v, path, spec)

    return check


# -- the cloud part ------------------------------------------------------------


def default_cloud():
    """The cloud part in force before the cloud sent any: version 0, no alarms."""
    return {"version": 0, "sampling": {}, "thresholds": [], "heartbeat": 300, "upload": 60}


def validate_cloud(cloud, kinds, path="cloud"):
    """Normalized cloud part, checked against the terminal's channels.

    ``kinds`` is ``{channel name: kind}`` of every channel the terminal has
    (the names of its birth frame, ``<device>.<point>``); ``path`` prefixes
    every error message (``""`` for paths relative to the document).
    """
    c = section(
        cloud,
        path,
        (
            ("version", integer(0, U32_MAX), REQUIRED),
            ("sampling", mapping, None),
            ("thresholds", anything, None),
            ("heartbeat", integer(10, 86400), 300),
            ("upload", integer(0, 86400), 60),
        ),
    )
    sampling = {}
    for name, secs in (c["sampling"] or {}).items():
        p = join(path, "sampling." + str(name))
        if name not in kinds:
            fail(p, "no such channel in the wiring")
        sampling[name] = integer(1, 86400)(secs, p)
    c["sampling"] = sampling
    ths = c["thresholds"]
    if ths is None:
        ths = []
    p = join(path, "thresholds")
    if not isinstance(ths, list):
        fail(p, "must be a list")
    if len(ths) > MAX_THRESHOLDS:
        fail(p, "%d entries, at most %d" % (len(ths), MAX_THRESHOLDS))
    out = []
    seen = []
    for i, given in enumerate(ths):
        tp = "%s[%d]" % (p, i)
        t = _threshold(given, tp, kinds)
        key = (t["channel"], t["cond"])
        if key in seen:
            fail(tp, "a second %s rule for %s" % (t["cond"], t["channel"]))
        seen.append(key)
        out.append(t)
    c["thresholds"] = out
    return c


def _threshold(t, path, kinds):
    t = section(
        t,
        path,
        (
            ("channel", text(1, 65), REQUIRED),
            ("cond", choice(*CONDS), REQUIRED),
            ("warn", number, None),
            ("alarm", number, None),
            ("hyst", number_range(0, 1e9), 0),
            ("on_delay", integer(0, MAX_DELAY), 0),
            ("off_delay", integer(0, MAX_DELAY), 0),
            ("count", integer(1, MAX_COUNT), None),
            ("window", integer(1, MAX_WINDOW), None),
            ("override", mapping, None),
        ),
    )
    cond = t["cond"]
    kind = kinds.get(t["channel"])
    if kind is None:
        fail(path + ".channel", "no such channel in the wiring")
    if (cond == "contact") != (kind in CONTACT_KINDS):
        fail(path + ".cond", "%s does not apply to a %s channel" % (cond, kind))
    if t["warn"] is None and t["alarm"] is None:
        fail(path, "needs warn or alarm")
    if cond == "contact":
        for key in ("warn", "alarm"):
            if t[key] not in (None, 0, 1) or type(t[key]) is float:
                fail(path + "." + key, "must be the contact state 0 or 1")
        if t["hyst"]:
            fail(path + ".hyst", "does not apply to a contact")
    if (t["count"] or t["window"]) and cond != "leak":
        fail(path + ".count", "count and window apply to leak only")
    if (t["count"] is None) != (t["window"] is None):
        fail(path + (".window" if t["count"] else ".count"), "count and window go together")
    _order(t, t["warn"], t["alarm"], path)
    ov = t["override"]
    if ov is not None:
        p = path + ".override"
        ov = section(
            ov,
            p,
            (
                ("warn", number, None),
                ("alarm", number, None),
                ("until", integer(0, U32_MAX), REQUIRED),
            ),
        )
        if ov["warn"] is None and ov["alarm"] is None:
            fail(p, "needs warn or alarm")
        for key in ("warn", "alarm"):
            if ov[key] is not None and t[key] is None:
                fail(p + "." + key, "the rule has no %s level to override" % key)
            if cond == "contact" and ov[key] is not None:
                fail(p + "." + key, "a contact state cannot be overridden")
        _order(
            t,
            t["warn"] if ov["warn"] is None else ov["warn"],
            t["alarm"] if ov["alarm"] is None else ov["alarm"],
            p,
        )
        t["override"] = ov
    return t


def _order(t, warn, alarm, path):
    if warn is None or alarm is None or t["cond"] == "contact":
        return
    if t["cond"] == "lo":
        if warn < alarm:
            fail(path + ".warn", "must be >= alarm for a lo condition")
    elif warn > alarm:
        fail(path + ".warn", "must be <= alarm")
