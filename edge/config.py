"""The terminal's configuration: plain data, validated, persisted atomically.

A configuration is ``{"site": {...}, "cloud": {...}}``.

The **site** part is what the installer writes to the board (``site.json``,
see ``edge/installer/siteconfig.py``); it never changes from the cloud::

    {"terminal_id": "T0001",
     "broker": {"host": "mqtt.example.net", "port": 8883, "tls": true},
     "credentials": {"username": "T0001", "password": "..."},
     "wiring": [{"unit": 1, "profile": "IM-100", "name": "leak1"}, ...],
     "sample": {"interval": 60, "unreachable_after": 3},          # optional
     "bus": {"baud": 9600, "parity": "N", "stop": 1,
             "timeout_ms": 500, "retries": 2},                    # optional
     "clock": {"ntp": "pool.ntp.org", "max_age": 86400},          # optional
     "outbox": {"budget": 65536},                                 # optional
     "profiles": [{"model": "XY-1", "points": [...]}]}            # optional

``profiles`` adds sensor models to the built-in ones (``edge/profiles.py``
validates them), so a site can wire a model without a code change.

A wiring entry names a device: Modbus ``unit``, sensor ``profile`` (``model``
is accepted as a synonym, as the installer's probe prints it) and a ``name``
(default ``u<unit>``). Its channels are ``<name>.<point>`` for every point of
the profile, e.g. ``leak1.ior``. Aliases (the small ints of the birth frame)
are assigned in wiring order, then in the profile's point order, from 0: the
same site file always gives the same aliases.

The **cloud** part comes from the cloud (retained config frame) and is kept
in ``cloud.json``::

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

:func:`validate` returns a normalized copy (every optional key filled in)
or raises :class:`~edge.errors.ConfigError` whose message is
``<path>: <problem>``, e.g. ``cloud.thresholds[2].warn: must be a number``.
Unknown keys are errors, so a typo never silently disables an alarm.
Messages name keys and limits, never the password.
"""

import json
import os

from edge.errors import ConfigError

SITE_FILE = "site.json"
CLOUD_FILE = "cloud.json"

U32_MAX = 0xFFFFFFFF
MAX_CHANNELS = 64  # protocol.limits.MAX_CHANNELS: aliases must fit the birth frame
MAX_THRESHOLDS = 128
MAX_DELAY = 86400  # one day
MAX_WINDOW = 7 * 86400
MAX_COUNT = 100
CONDS = ("hi", "lo", "leak", "contact")
CONTACT_KINDS = ("contact",)
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
_TID_CHARS = _NAME_CHARS

# (key, check, default) per section; check(value, path) returns the normalized value.
# A default of _REQUIRED makes the key mandatory.
_REQUIRED = object()


def _fail(path, problem):
    raise ConfigError("%s: %s" % (path, problem))


def _dict(v, path):
    if not isinstance(v, dict):
        _fail(path, "must be an object")
    return v


def _int(lo, hi):
    def check(v, path):
        if type(v) is not int or not lo <= v <= hi:
            _fail(path, "must be an integer %d..%d" % (lo, hi))
        return v

    return check


def _number(v, path):
    # NaN is the one value unequal to itself; no math.isfinite on every port
    if type(v) not in (int, float) or v != v or v in (float("inf"), float("-inf")):  # noqa: PLR0124
        _fail(path, "must be a number")
    return v


def _number_range(lo, hi):
    def check(v, path):
        _number(v, path)
        if not lo <= v <= hi:
            _fail(path, "must be a number %s..%s" % (lo, hi))
        return v

    return check


def _any(v, path):
    return v


def _bool(v, path):
    if v is not True and v is not False:
        _fail(path, "must be true or false")
    return v


def _text(lo, hi, chars=None):
    def check(v, path):
        if not isinstance(v, str) or not lo <= len(v) <= hi:
            _fail(path, "must be a string of %d..%d characters" % (lo, hi))
        if chars is not None:
            for c in v:
                if c not in chars:
                    _fail(path, "may only contain A-Z a-z 0-9 _ -")
        return v

    return check


def _choice(*options):
    def check(v, path):
        if v not in options or type(v) is bool:
            _fail(path, "must be one of %s" % ", ".join([str(o) for o in options]))
        return v

    return check


def _section(obj, path, spec):
    """Check ``obj`` against ``spec`` rows; return a new dict with defaults filled."""
    _dict(obj, path)
    known = [row[0] for row in spec]
    for key in obj:
        if key not in known:
            _fail(_join(path, key), "unknown key")
    out = {}
    for key, check, default in spec:
        # null means "not set", so a normalized config validates to itself
        if obj.get(key) is not None:
            out[key] = check(obj[key], _join(path, key))
        elif default is _REQUIRED:
            _fail(_join(path, key), "is required")
        else:
            out[key] = default
    return out


def _join(path, key):
    return key if not path else path + "." + key


_BROKER = (
    ("host", _text(1, 253), _REQUIRED),
    ("port", _int(1, 65535), None),  # None: 8883 with TLS, 1883 without
    ("tls", _bool, True),
)
_SAMPLE = (
    ("interval", _int(1, 86400), 60),
    ("unreachable_after", _int(1, 100), 3),
)
_BUS = (
    ("baud", _choice(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200), 9600),
    ("parity", _choice("N", "E", "O"), "N"),
    ("stop", _choice(1, 2), 1),
    ("timeout_ms", _int(20, 5000), 500),
    ("retries", _int(0, 5), 2),
)
_CLOCK = (
    ("ntp", _text(0, 253), "pool.ntp.org"),  # "" disables NTP (cloud time only)
    ("max_age", _int(60, 7 * 86400), 86400),
)
_OUTBOX = (("budget", _int(8192, 4 * 1024 * 1024), 65536),)


def _sub(spec):
    def check(v, path):
        return _section(v, path, spec)

    return check


def _credentials(v, path):
    return _section(
        v,
        path,
        (
            ("username", _text(1, 32), None),
            ("password", _text(0, 255), _REQUIRED),
        ),
    )


def _wiring(v, path):
    if not isinstance(v, list):
        _fail(path, "must be a list of devices")
    out = []
    units = []
    names = []
    for i, given in enumerate(v):
        p = "%s[%d]" % (path, i)
        dev = _dict(given, p)
        if "model" in dev and "profile" not in dev:
            dev = dict(dev)
            dev["profile"] = dev.pop("model")
        d = _section(
            dev,
            p,
            (
                ("unit", _int(1, 247), _REQUIRED),
                ("profile", _text(1, 32), _REQUIRED),
                ("name", _text(1, 32, _NAME_CHARS), None),
            ),
        )
        if d["name"] is None:
            d["name"] = "u%d" % d["unit"]
        if d["unit"] in units:
            _fail(p + ".unit", "unit %d is wired twice" % d["unit"])
        if d["name"] in names:
            _fail(p + ".name", "name %s is used twice" % d["name"])
        units.append(d["unit"])
        names.append(d["name"])
        out.append(d)
    return out


def _list(v, path):
    if not isinstance(v, list):
        _fail(path, "must be a list")
    return v


_SITE = (
    ("terminal_id", _text(1, 32, _TID_CHARS), _REQUIRED),
    ("broker", _sub(_BROKER), _REQUIRED),
    ("credentials", _credentials, _REQUIRED),
    ("wiring", _wiring, _REQUIRED),
    ("sample", _sub(_SAMPLE), None),
    ("bus", _sub(_BUS), None),
    ("clock", _sub(_CLOCK), None),
    ("outbox", _sub(_OUTBOX), None),
    ("profiles", _list, None),
)


def validate_site(site, points=None, path="site"):
    """Normalized site part.

    ``points(profile) -> [(point, kind), ...]`` (None for an unknown
    profile) describes the sensor profiles; by default the built-in
    profiles plus the site's own ``profiles``.
    """
    s = _section(site, path, _SITE)
    if s["profiles"] is None:
        s["profiles"] = []
    if points is None:
        points = site_points(s, _join(path, "profiles"))
    for key, spec in (("sample", _SAMPLE), ("bus", _BUS), ("clock", _CLOCK), ("outbox", _OUTBOX)):
        if s[key] is None:
            s[key] = _section({}, _join(path, key), spec)
    b = s["broker"]
    if b["port"] is None:
        b["port"] = 8883 if b["tls"] else 1883
    c = s["credentials"]
    if c["username"] is None:
        c["username"] = s["terminal_id"]
    elif c["username"] != s["terminal_id"]:
        # the broker ACL confines each terminal by its username
        _fail(_join(path, "credentials.username"), "must equal terminal_id")
    n = 0
    for i, dev in enumerate(s["wiring"]):
        pts = points(dev["profile"])
        if pts is None:
            _fail("%s[%d].profile" % (_join(path, "wiring"), i), "unknown sensor profile")
        n += len(pts)
    if n > MAX_CHANNELS:
        _fail(_join(path, "wiring"), "%d channels, at most %d" % (n, MAX_CHANNELS))
    return s


def site_points(site, path="site.profiles"):
    """``points(profile)`` over the built-in profiles and those of ``site``.

    Raises ConfigError ``<path>: <problem>`` for an invalid site profile.
    """
    from edge import profiles

    problem = None
    try:
        table = profiles.profile_table(site.get("profiles") or [])
    except ConfigError as err:
        problem = str(err)
    if problem is not None:
        _fail(path, problem)  # outside the except: MicroPython warns on chaining

    def points(model):
        p = table.get(model)
        if p is None:
            return None
        return [(q["name"], q["kind"]) for q in p["points"]]

    return points


def channels(site, points=None):
    """``[(alias, name, kind, device_index, point), ...]`` of a normalized site part."""
    if points is None:
        points = site_points(site)
    out = []  # type: list
    for i, dev in enumerate(site["wiring"]):
        for point, kind in points(dev["profile"]):
            out.append((len(out), dev["name"] + "." + point, kind, i, point))
    return out


def aliases(site, points=None):
    """``{channel name: alias}`` of a normalized site part."""
    return {name: alias for alias, name, _, _, _ in channels(site, points)}


def default_cloud():
    """The cloud part in force before the cloud sent any: version 0, no alarms."""
    return {"version": 0, "sampling": {}, "thresholds": [], "heartbeat": 300, "upload": 60}


def _threshold(t, path, kinds):
    t = _section(
        t,
        path,
        (
            ("channel", _text(1, 65), _REQUIRED),
            ("cond", _choice(*CONDS), _REQUIRED),
            ("warn", _number, None),
            ("alarm", _number, None),
            ("hyst", _number_range(0, 1e9), 0),
            ("on_delay", _int(0, MAX_DELAY), 0),
            ("off_delay", _int(0, MAX_DELAY), 0),
            ("count", _int(1, MAX_COUNT), None),
            ("window", _int(1, MAX_WINDOW), None),
            ("override", _dict, None),
        ),
    )
    cond = t["cond"]
    kind = kinds.get(t["channel"])
    if kind is None:
        _fail(path + ".channel", "no such channel in the wiring")
    if (cond == "contact") != (kind in CONTACT_KINDS):
        _fail(path + ".cond", "%s does not apply to a %s channel" % (cond, kind))
    if t["warn"] is None and t["alarm"] is None:
        _fail(path, "needs warn or alarm")
    if cond == "contact":
        for key in ("warn", "alarm"):
            if t[key] not in (None, 0, 1) or type(t[key]) is float:
                _fail(path + "." + key, "must be the contact state 0 or 1")
        if t["hyst"]:
            _fail(path + ".hyst", "does not apply to a contact")
    if (t["count"] or t["window"]) and cond != "leak":
        _fail(path + ".count", "count and window apply to leak only")
    if (t["count"] is None) != (t["window"] is None):
        _fail(path + (".window" if t["count"] else ".count"), "count and window go together")
    _order(t, t["warn"], t["alarm"], path)
    ov = t["override"]
    if ov is not None:
        p = path + ".override"
        ov = _section(
            ov,
            p,
            (
                ("warn", _number, None),
                ("alarm", _number, None),
                ("until", _int(0, U32_MAX), _REQUIRED),
            ),
        )
        if ov["warn"] is None and ov["alarm"] is None:
            _fail(p, "needs warn or alarm")
        for key in ("warn", "alarm"):
            if ov[key] is not None and t[key] is None:
                _fail(p + "." + key, "the rule has no %s level to override" % key)
            if cond == "contact" and ov[key] is not None:
                _fail(p + "." + key, "a contact state cannot be overridden")
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
            _fail(path + ".warn", "must be >= alarm for a lo condition")
    elif warn > alarm:
        _fail(path + ".warn", "must be <= alarm")


def validate_cloud(cloud, site, points=None, path="cloud"):
    """Normalized cloud part, checked against the channels of the normalized ``site``."""
    c = _section(
        cloud,
        path,
        (
            ("version", _int(0, U32_MAX), _REQUIRED),
            ("sampling", _dict, None),
            ("thresholds", _any, None),
            ("heartbeat", _int(10, 86400), 300),
            ("upload", _int(0, 86400), 60),
        ),
    )
    kinds = {}
    for _, name, kind, _, _ in channels(site, points):
        kinds[name] = kind
    sampling = {}
    for name, secs in (c["sampling"] or {}).items():
        p = _join(path, "sampling." + str(name))
        if name not in kinds:
            _fail(p, "no such channel in the wiring")
        sampling[name] = _int(1, 86400)(secs, p)
    c["sampling"] = sampling
    ths = c["thresholds"]
    if ths is None:
        ths = []
    p = _join(path, "thresholds")
    if not isinstance(ths, list):
        _fail(p, "must be a list")
    if len(ths) > MAX_THRESHOLDS:
        _fail(p, "%d entries, at most %d" % (len(ths), MAX_THRESHOLDS))
    out = []
    seen = []
    for i, given in enumerate(ths):
        tp = "%s[%d]" % (p, i)
        t = _threshold(given, tp, kinds)
        key = (t["channel"], t["cond"])
        if key in seen:
            _fail(tp, "a second %s rule for %s" % (t["cond"], t["channel"]))
        seen.append(key)
        out.append(t)
    c["thresholds"] = out
    return c


def validate(cfg, points=None):
    """Return the normalized ``{"site", "cloud"}`` or raise ConfigError.

    ``points`` as for :func:`validate_site`. A missing cloud part means
    :func:`default_cloud`.
    """
    _section(cfg, "", (("site", _dict, _REQUIRED), ("cloud", _dict, None)))
    site = validate_site(cfg["site"], points)
    cloud = cfg.get("cloud")
    if cloud is None:
        cloud = default_cloud()
    return {"site": site, "cloud": validate_cloud(cloud, site, points)}


class ConfigStore:
    """The configuration on flash: ``site.json`` and ``cloud.json`` in ``directory``.

    Every write goes to ``<file>.tmp`` and is renamed over the file, so a
    power cut leaves either the old or the new file, never a torn one
    (where rename cannot replace a file, FAT, the old file is removed first
    and a lone ``.tmp`` is picked up by :meth:`load`).
    """

    def __init__(self, directory, points=None):
        self.dir = directory.rstrip("/")
        self.points = points  # None: built-in and site profiles
        self.config = None  # the configuration in force after load/apply
        self.warning = None  # why a stored cloud part was not used, if it was not

    def load(self):
        """Read, validate and return the configuration in force.

        Raises ConfigError when the site part is missing or invalid (the
        terminal cannot run without it). A cloud part that is unreadable or
        no longer fits the site (rewired) is replaced by
        :func:`default_cloud` and the reason kept in :attr:`warning`; the
        cloud's retained config restores it on the next connect.
        """
        site = self._read(SITE_FILE)
        if site is None:
            raise ConfigError("%s: no site configuration on the terminal" % self._path(SITE_FILE))
        site = validate_site(site, self.points)
        self.warning = None
        cloud = default_cloud()
        try:
            stored = self._read(CLOUD_FILE)
            if stored is not None:
                cloud = validate_cloud(stored, site, self.points)
        except ConfigError as err:
            self.warning = "stored cloud configuration ignored: %s" % err
        self.config = {"site": site, "cloud": cloud}
        return self.config

    def save(self, cfg):
        """Validate ``cfg`` and write both parts; return the normalized config.

        Raises ConfigError (nothing written) or OSError. A crash between the
        two files leaves the new site with the old cloud part, which
        :meth:`load` re-checks against it.
        """
        cfg = validate(cfg, self.points)
        if self._stored_site() != cfg["site"]:
            # only when it changed: the installer checks site.json by its hash
            self._write(SITE_FILE, cfg["site"])
        self._write(CLOUD_FILE, cfg["cloud"])
        self.config = cfg
        return cfg

    def apply_cloud(self, cloud, version=None):
        """Validate and persist a cloud part; return ``(ok, reason)``.

        ``version`` (the config frame's version field) overrides
        ``cloud["version"]``. The version must be above the one in force: a
        lower one (a stale retained message) is refused; the same version
        with the same content is a redelivery and accepted as "unchanged".
        On any refusal the configuration in force stays as it was. The
        reason is one line for the cfgack frame.
        """
        config = self.config if self.config is not None else self.load()
        if version is not None:
            if not isinstance(cloud, dict):
                return False, "config: must be an object"
            cloud = dict(cloud)
            cloud["version"] = version
        try:
            # paths relative to what the cloud sent: "thresholds[2].warn: ..."
            new = validate_cloud(cloud, config["site"], self.points, path="")
        except ConfigError as err:
            return False, str(err)
        current = config["cloud"]
        if new["version"] < current["version"]:
            return False, "stale: version %d is older than %d in force" % (
                new["version"],
                current["version"],
            )
        if new["version"] == current["version"]:
            if new == current:
                return True, "unchanged"
            return False, "stale: version %d is in force with other content" % new["version"]
        try:
            self._write(CLOUD_FILE, new)
        except OSError as err:
            return False, "cannot store the configuration: %s" % err
        self.config = {"site": config["site"], "cloud": new}
        return True, "applied"

    # -- files -------------------------------------------------------------------

    def _stored_site(self):
        """The normalized site part on flash, or None when absent or invalid."""
        try:
            site = self._read(SITE_FILE)
            return None if site is None else validate_site(site, self.points)
        except ConfigError:
            return None

    def _path(self, name):
        return self.dir + "/" + name if self.dir else name

    def _read(self, name):
        """The parsed JSON of ``name`` (or of its lone ``.tmp``), None if neither exists."""
        for candidate in (name, name + ".tmp"):
            try:
                with open(self._path(candidate)) as f:
                    text = f.read()
            except OSError:
                continue
            try:
                return json.loads(text)
            except ValueError:
                pass
            # raised outside the except: MicroPython warns on exception chaining
            if candidate == name:
                raise ConfigError("%s: not valid JSON" % self._path(name))
            return None  # an unfinished first write: there is no file yet
        return None

    def _write(self, name, obj):
        tmp = self._path(name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(obj))
            f.flush()
        try:
            os.rename(tmp, self._path(name))
        except OSError:
            os.remove(self._path(name))
            os.rename(tmp, self._path(name))
