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

A site adds sensor models to the built-in ones (``edge/models/``) without
a code change: a file ``profiles/<MODEL>.json`` beside ``site.json``, or an
inline entry in ``profiles``; ``edge/profiles.py`` validates both. Only the
profiles the wiring names are loaded.

A wiring entry names a device: Modbus ``unit``, sensor ``profile`` (``model``
is accepted as a synonym, as the installer's probe prints it) and a ``name``
(default ``u<unit>``). Its channels are ``<name>.<point>`` for every point of
the profile, e.g. ``leak1.ior``. Aliases (the small ints of the birth frame)
are assigned in wiring order, then in the profile's point order, from 0: the
same site file always gives the same aliases.

The **cloud** part comes from the cloud (retained config frame) and is kept
in ``cloud.json``; its schema and validator are the protocol's
(``protocol/config.py``), shared with the cloud.

:func:`validate` returns a normalized copy (every optional key filled in)
or raises :class:`~protocol.errors.ConfigError` whose message is
``<path>: <problem>``, e.g. ``cloud.thresholds[2].warn: must be a number``.
Unknown keys are errors, so a typo never silently disables an alarm.
Messages name keys and limits, never the password.
"""

import json
import os

from edge.errors import ConfigError
from protocol import config
from protocol.config import (
    NAME_CHARS,
    REQUIRED,
    boolean,
    choice,
    default_cloud,
    fail,
    integer,
    join,
    mapping,
    section,
    sub,
    text,
)
from protocol.limits import MAX_CHANNELS

SITE_FILE = "site.json"
CLOUD_FILE = "cloud.json"
PROFILE_DIR = "profiles"  # the site's own sensor profiles, <MODEL>.json


_BROKER = (
    ("host", text(1, 253), REQUIRED),
    ("port", integer(1, 65535), None),  # None: 8883 with TLS, 1883 without
    ("tls", boolean, True),
)
_SAMPLE = (
    ("interval", integer(1, 86400), 60),
    ("unreachable_after", integer(1, 100), 3),
)
_BUS = (
    ("baud", choice(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200), 9600),
    ("parity", choice("N", "E", "O"), "N"),
    ("stop", choice(1, 2), 1),
    ("timeout_ms", integer(20, 5000), 500),
    ("retries", integer(0, 5), 2),
)
_CLOCK = (
    ("ntp", text(0, 253), "pool.ntp.org"),  # "" disables NTP (cloud time only)
    ("max_age", integer(60, 7 * 86400), 86400),
)
_OUTBOX = (("budget", integer(8192, 4 * 1024 * 1024), 65536),)


def _credentials(v, path):
    return section(
        v,
        path,
        (
            ("username", text(1, 32), None),
            ("password", text(0, 255), REQUIRED),
        ),
    )


def _wiring(v, path):
    if not isinstance(v, list):
        fail(path, "must be a list of devices")
    out = []
    units = []
    names = []
    for i, given in enumerate(v):
        p = "%s[%d]" % (path, i)
        dev = mapping(given, p)
        if "model" in dev and "profile" not in dev:
            dev = dict(dev)
            dev["profile"] = dev.pop("model")
        d = section(
            dev,
            p,
            (
                ("unit", integer(1, 247), REQUIRED),
                ("profile", text(1, 32), REQUIRED),
                ("name", text(1, 32, NAME_CHARS), None),
            ),
        )
        if d["name"] is None:
            d["name"] = "u%d" % d["unit"]
        if d["unit"] in units:
            fail(p + ".unit", "unit %d is wired twice" % d["unit"])
        if d["name"] in names:
            fail(p + ".name", "name %s is used twice" % d["name"])
        units.append(d["unit"])
        names.append(d["name"])
        out.append(d)
    return out


def _list(v, path):
    if not isinstance(v, list):
        fail(path, "must be a list")
    return v


_SITE = (
    ("terminal_id", text(1, 32, NAME_CHARS), REQUIRED),
    ("broker", sub(_BROKER), REQUIRED),
    ("credentials", _credentials, REQUIRED),
    ("wiring", _wiring, REQUIRED),
    ("sample", sub(_SAMPLE), None),
    ("bus", sub(_BUS), None),
    ("clock", sub(_CLOCK), None),
    ("outbox", sub(_OUTBOX), None),
    ("profiles", _list, None),
)


def validate_site(site, points=None, path="site", site_dir=None):
    """Normalized site part.

    ``points(profile) -> [(point, kind), ...]`` (None for an unknown
    profile) describes the sensor profiles; by default the built-in
    profiles plus the site's own: its ``profiles`` list and the files in
    ``site_dir`` (the site's profile directory, when it has one).
    """
    s = section(site, path, _SITE)
    if s["profiles"] is None:
        s["profiles"] = []
    if points is None:
        points = site_points(s, join(path, "profiles"), site_dir)
    for key, spec in (("sample", _SAMPLE), ("bus", _BUS), ("clock", _CLOCK), ("outbox", _OUTBOX)):
        if s[key] is None:
            s[key] = section({}, join(path, key), spec)
    b = s["broker"]
    if b["port"] is None:
        b["port"] = 8883 if b["tls"] else 1883
    c = s["credentials"]
    if c["username"] is None:
        c["username"] = s["terminal_id"]
    elif c["username"] != s["terminal_id"]:
        # the broker ACL confines each terminal by its username
        fail(join(path, "credentials.username"), "must equal terminal_id")
    n = 0
    for i, dev in enumerate(s["wiring"]):
        pts = points(dev["profile"])
        if pts is None:
            fail("%s[%d].profile" % (join(path, "wiring"), i), "unknown sensor profile")
        n += len(pts)
    if n > MAX_CHANNELS:
        fail(join(path, "wiring"), "%d channels, at most %d" % (n, MAX_CHANNELS))
    return s


def site_table(site, path="site.profiles", site_dir=None):
    """``{model: profile}`` of the profiles the wiring of ``site`` names.

    They come from the site's ``profiles`` list, the files in ``site_dir``
    and the built-in files (:func:`edge.profiles.profile_table`). Raises
    ConfigError ``<path>: <problem>`` for an invalid site profile.
    """
    from edge import profiles

    problem = None
    models = [d["profile"] for d in site["wiring"]]
    try:
        table = profiles.profile_table(site.get("profiles") or [], models, site_dir)
    except ConfigError as err:
        problem = str(err)
    if problem is not None:
        fail(path, problem)  # outside the except: MicroPython warns on chaining
    return table


def points_of(table):
    """``points(profile) -> [(point, kind), ...]`` (None when unknown) over ``table``."""

    def points(model):
        p = table.get(model)
        if p is None:
            return None
        return [(q["name"], q["kind"]) for q in p["points"]]

    return points


def site_points(site, path="site.profiles", site_dir=None):
    """``points(profile)`` over the profiles the wiring of ``site`` names (:func:`site_table`)."""
    return points_of(site_table(site, path, site_dir))


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


def validate_cloud(cloud, site, points=None, path="cloud"):
    """Normalized cloud part, checked against the channels of the normalized ``site``
    (:func:`protocol.config.validate_cloud`)."""
    kinds = {}
    for _, name, kind, _, _ in channels(site, points):
        kinds[name] = kind
    return config.validate_cloud(cloud, kinds, path)


def validate(cfg, points=None, site_dir=None):
    """Return the normalized ``{"site", "cloud"}`` or raise ConfigError.

    ``points`` and ``site_dir`` as for :func:`validate_site`. A missing
    cloud part means :func:`default_cloud`.
    """
    section(cfg, "", (("site", mapping, REQUIRED), ("cloud", mapping, None)))
    site = validate_site(cfg["site"], points, site_dir=site_dir)
    if points is None:
        points = site_points(site, site_dir=site_dir)
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
        self.site_dir = self._path(PROFILE_DIR)  # the site's profile files
        # the wired profiles of the site in force (None when ``points`` was
        # given): the terminal polls with the same dicts it checked with
        self.table = None
        self._points = points  # what the configuration in force was checked with
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
        site = validate_site(site, self.points, site_dir=self.site_dir)
        self._use(site)
        self.warning = None
        cloud = default_cloud()
        try:
            stored = self._read(CLOUD_FILE)
            if stored is not None:
                cloud = validate_cloud(stored, site, self._points)
        except ConfigError as err:
            self.warning = "stored cloud configuration ignored: %s" % err
        self.config = {"site": site, "cloud": cloud}
        return self.config

    def resume(self, config):
        """Put ``config``, what :meth:`load` or :meth:`apply_cloud` left in
        :attr:`config` earlier, back in force without reading the files.

        For a caller that keeps the configuration but not the store (a
        terminal unloads this module between config frames). Raises
        ConfigError only if a profile file the wiring names went bad since.
        """
        self._use(config["site"])
        self.config = config

    def save(self, cfg):
        """Validate ``cfg`` and write both parts; return the normalized config.

        Raises ConfigError (nothing written) or OSError. A crash between the
        two files leaves the new site with the old cloud part, which
        :meth:`load` re-checks against it.
        """
        cfg = validate(cfg, self.points, self.site_dir)
        if self._stored_site() != cfg["site"]:
            # only when it changed: the installer checks site.json by its hash
            self._write(SITE_FILE, cfg["site"])
        self._write(CLOUD_FILE, cfg["cloud"])
        self.config = cfg
        self._use(cfg["site"])
        return cfg

    def _use(self, site):
        """Keep the profiles of ``site`` for the cloud checks and the poller."""
        if self.points is None:
            self.table = site_table(site, site_dir=self.site_dir)
            self._points = points_of(self.table)

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
            new = validate_cloud(cloud, config["site"], self._points, path="")
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
            if site is None:
                return None
            return validate_site(site, self.points, site_dir=self.site_dir)
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
