"""Scenario files for the fleet runner: what every terminal wires, and a timeline.

A scenario is TOML (or JSON with the same structure)::

    name = "demo"
    terminals = 20            # fleet size unless --terminals overrides it
    prefix = "DEMO"           # terminal ids DEMO0001, DEMO0002, ...
    duration = 300            # seconds; 0 runs until SIGINT/SIGTERM
    speed = 1                 # simulated seconds per real second (physics)
    seed = 7                  # physics and fault dice; terminal i uses seed + i

    [site]                    # extra site-part keys for every terminal
    sample = {interval = 10}

    [cloud]                   # cloud part seeded into every new terminal (cloud.json)
    upload = 0
    heartbeat = 60
    thresholds = [{channel = "leak.ior", cond = "hi", warn = 30, alarm = 50}]

    [[device]]                # the RS-485 bus of every terminal
    kind = "insulation"       # a firmware_sim kind (its physics)
    model = "IM-100"          # the sensor profile it serves (default: the kind's)
    unit = 1
    name = "leak"             # channel names are NAME.POINT
    params = {ior_base = 1.5} # device parameters (python -m firmware_sim kinds)

    [groups]                  # terminal numbers, 1-based: a list or "FROM-TO"
    leaky = [1, 2]
    east = "11-20"

    [[event]]                 # at: seconds after the fleet started
    at = 30
    action = "set"
    group = "leaky"           # default: every terminal
    unit = 1
    point = "ior"
    value = 35.0

Actions and their fields: ``set`` (unit, point, value), ``unset`` (unit,
[point]), ``inject`` (unit, fault, [params]), ``clear`` (unit, [fault]),
``unplug``/``plug`` (unit): sensor changes and faults on the simulated
bus; ``cut``: drop the terminals' broker connections (the broker publishes
their last will, they reconnect with backoff); ``outage`` (down): the
terminals' uplink is down for ``down`` seconds (connections dropped, no
reconnect until it ends); ``reboot``: orderly restart of the agent (the
open batch is saved, boot counter + 1); ``power_cut`` (down): the agent
stops dead for ``down`` seconds, RAM lost, then boots.

:func:`load` and :func:`parse` return a :class:`Scenario` or raise
:class:`~firmware_sim.errors.ScenarioError` whose message is
``<key path>: <problem>``, e.g. ``event[2].unit: no device with unit 9``.
Unknown keys are errors, so a typo never silently drops an event. The cloud
part is checked with the terminal's own validator against the wiring.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import validate_cloud, validate_site
from edge.errors import ConfigError as EdgeConfigError
from protocol.errors import ProtocolError
from protocol.frames import check_tid

from .devices import KINDS
from .errors import FaultError, ScenarioError
from .faults import FAULTS, normalise
from .registers import model as model_of
from .registers import names as model_names

SENSOR_ACTIONS = ("set", "unset", "inject", "clear", "unplug", "plug")
TERMINAL_ACTIONS = ("cut", "outage", "reboot", "power_cut")
ACTIONS = SENSOR_ACTIONS + TERMINAL_ACTIONS
MAX_TERMINALS = 100_000
# Fields an event may carry besides at/action/group, per action: (required, optional).
_EVENT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "set": (("unit", "point", "value"), ()),
    "unset": (("unit",), ("point",)),
    "inject": (("unit", "fault"), ("params",)),
    "clear": (("unit",), ("fault",)),
    "unplug": (("unit",), ()),
    "plug": (("unit",), ()),
    "cut": ((), ()),
    "outage": (("down",), ()),
    "reboot": ((), ()),
    "power_cut": (("down",), ()),
}
_TOP = (
    "name",
    "terminals",
    "prefix",
    "duration",
    "speed",
    "seed",
    "site",
    "cloud",
    "device",
    "groups",
    "event",
)
_SITE_RESERVED = ("terminal_id", "broker", "credentials", "wiring")


class Device:
    """One simulated device on every terminal's bus."""

    def __init__(
        self, kind: str, unit: int, name: str, params: dict[str, float], model: str = ""
    ) -> None:
        self.kind = kind
        self.unit = unit
        self.name = name
        self.params = params
        self.model = model or KINDS[kind].default_model

    def wiring(self) -> dict[str, Any]:
        """The terminal's wiring entry: the same profile the simulated device serves."""
        return {"unit": self.unit, "profile": self.model, "name": self.name}

    def points(self) -> list[str]:
        """Names of the points of the device's model."""
        return [pt.name for pt in model_of(self.model).points]


class Event:
    """One timeline entry: ``action`` on the terminals of ``group`` at ``at`` seconds."""

    def __init__(self, at: float, action: str, group: str, fields: dict[str, Any]) -> None:
        self.at = at
        self.action = action
        self.group = group
        self.fields = fields

    def __repr__(self) -> str:
        return "Event(%g, %s, %s, %r)" % (self.at, self.action, self.group, self.fields)


class Scenario:
    """A validated scenario; see the module doc for the meaning of each field."""

    def __init__(
        self,
        name: str,
        terminals: int,
        prefix: str,
        duration: float,
        *,
        speed: float,
        seed: int,
        site: dict[str, Any],
        cloud: dict[str, Any],
        devices: list[Device],
        groups: dict[str, list[int]],
        events: list[Event],
    ) -> None:
        self.name = name
        self.terminals = terminals
        self.prefix = prefix
        self.duration = duration
        self.speed = speed
        self.seed = seed
        self.site = site
        self.cloud = cloud
        self.devices = devices
        self.groups = groups
        self.events = events

    def tid(self, number: int) -> str:
        """Terminal id of terminal ``number`` (1-based)."""
        return "%s%04d" % (self.prefix, number)

    def members(self, group: str, total: int) -> list[int]:
        """Terminal numbers of ``group`` within a fleet of ``total`` terminals."""
        if group == "all":
            return list(range(1, total + 1))
        return [n for n in self.groups[group] if n <= total]

    def wiring(self) -> list[dict[str, Any]]:
        return [d.wiring() for d in self.devices]

    def site_for(self, number: int, broker: dict[str, Any], password: str) -> dict[str, Any]:
        """The site part of terminal ``number`` (validated by the agent when it boots)."""
        tid = self.tid(number)
        site = json.loads(json.dumps(self.site))  # a deep copy
        site.update(
            {
                "terminal_id": tid,
                "broker": dict(broker),
                "credentials": {"username": tid, "password": password},
                "wiring": self.wiring(),
            }
        )
        return site


# -- loading ------------------------------------------------------------------


def load(path: str | Path) -> Scenario:
    """Read and validate a ``.toml`` or ``.json`` scenario file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ScenarioError("%s: cannot read (%s)" % (path, err.strerror or err)) from err
    try:
        if path.suffix == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:  # TOMLDecodeError is a ValueError
        raise ScenarioError(
            "%s: not valid %s (%s)" % (path, "JSON" if path.suffix == ".json" else "TOML", err)
        ) from err
    return parse(data)


def _fail(path: str, problem: str) -> ScenarioError:
    return ScenarioError("%s: %s" % (path, problem))


def _int(v: Any, path: str, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(path, "must be an integer %d..%d" % (lo, hi))
    return v


def _num(v: Any, path: str, lo: float, hi: float) -> float:
    if type(v) not in (int, float) or not lo <= v <= hi:  # NaN fails the range test
        raise _fail(path, "must be a number %g..%g" % (lo, hi))
    return float(v)


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(path, "must be a non-empty string")
    return v


def _table(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(path, "must be a table")
    return v


def _keys(obj: dict[str, Any], path: str, allowed: tuple[str, ...] | list[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise _fail("%s.%s" % (path, key) if path else key, "unknown key")


def parse(data: Any) -> Scenario:
    """Validate a parsed scenario document (dict) and build the :class:`Scenario`."""
    data = _table(data, "scenario")
    _keys(data, "", _TOP)
    name = _str(data.get("name", "scenario"), "name")
    terminals = _int(data.get("terminals", 10), "terminals", 1, MAX_TERMINALS)
    prefix = _str(data.get("prefix", "VT"), "prefix")
    try:
        check_tid(prefix + "0001")
    except ProtocolError as err:
        raise _fail("prefix", "makes invalid terminal ids (%s)" % err) from err
    duration = _num(data.get("duration", 0), "duration", 0, 10 * 365 * 86400)
    speed = _num(data.get("speed", 1), "speed", 0, 1e6)
    seed = _int(data.get("seed", 0), "seed", 0, 2**31 - 1)
    devices = _devices(data.get("device"))
    site = _site(data.get("site", {}), devices)
    cloud = _cloud(data.get("cloud"), site, devices)
    groups = _groups(data.get("groups", {}))
    events = _events(data.get("event", []), devices, groups)
    return Scenario(
        name,
        terminals,
        prefix,
        duration,
        speed=speed,
        seed=seed,
        site=site,
        cloud=cloud,
        devices=devices,
        groups=groups,
        events=events,
    )


def _devices(rows: Any) -> list[Device]:
    if not isinstance(rows, list) or not rows:
        raise _fail("device", "at least one [[device]] is required")
    out: list[Device] = []
    for i, given in enumerate(rows):
        p = "device[%d]" % i
        row = _table(given, p)
        _keys(row, p, ("kind", "model", "unit", "name", "params"))
        kind = _str(row.get("kind"), p + ".kind")
        if kind not in KINDS:
            raise _fail(p + ".kind", "unknown kind %r; known: %s" % (kind, ", ".join(KINDS)))
        model = _str(row.get("model", KINDS[kind].default_model), p + ".model")
        if model not in model_names():
            raise _fail(
                p + ".model", "unknown model %r; known: %s" % (model, ", ".join(model_names()))
            )
        missing = {pt.kind for pt in model_of(model).points} - KINDS[kind].supplies
        if missing:
            raise _fail(
                p + ".model",
                "%s physics cannot simulate %s (no %s)" % (kind, model, ", ".join(sorted(missing))),
            )
        unit = _int(row.get("unit"), p + ".unit", 1, 247)
        name = _str(row.get("name", "u%d" % unit), p + ".name")
        params = _table(row.get("params", {}), p + ".params")
        known = KINDS[kind].params
        clean: dict[str, float] = {}
        for key, value in params.items():
            if key not in known:
                raise _fail(
                    "%s.params.%s" % (p, key),
                    "not a parameter of %s (%s)" % (kind, ", ".join(known) or "none"),
                )
            clean[key] = _num(value, "%s.params.%s" % (p, key), -1e12, 1e12)
        if any(d.unit == unit for d in out):
            raise _fail(p + ".unit", "unit %d is used twice" % unit)
        if any(d.name == name for d in out):
            raise _fail(p + ".name", "name %s is used twice" % name)
        out.append(Device(kind, unit, name, clean, model))
    return out


def _probe_site(extra: dict[str, Any], devices: list[Device]) -> dict[str, Any]:
    """A normalized site part as every terminal of the scenario will have it."""
    probe = json.loads(json.dumps(extra))
    probe.update(
        {
            "terminal_id": "T",
            "broker": {"host": "localhost", "tls": False},
            "credentials": {"password": ""},
            "wiring": [d.wiring() for d in devices],
        }
    )
    try:
        return validate_site(probe, path="site")
    except EdgeConfigError as err:
        raise ScenarioError(str(err)) from err


def _site(extra: Any, devices: list[Device]) -> dict[str, Any]:
    extra = _table(extra, "site")
    for key in _SITE_RESERVED:
        if key in extra:
            raise _fail("site." + key, "set by the fleet runner, not the scenario")
    _probe_site(extra, devices)
    return extra


def _cloud(cloud: Any, site_extra: dict[str, Any], devices: list[Device]) -> dict[str, Any]:
    """The cloud part seeded into each terminal, normalized; {} when the scenario has none."""
    if cloud is None:
        return {}
    cloud = dict(_table(cloud, "cloud"))
    cloud.setdefault("version", 1)
    try:
        return dict(validate_cloud(cloud, _probe_site(site_extra, devices), path="cloud"))
    except EdgeConfigError as err:
        raise ScenarioError(str(err)) from err


def _groups(groups: Any) -> dict[str, list[int]]:
    groups = _table(groups, "groups")
    out: dict[str, list[int]] = {}
    for name, spec in groups.items():
        p = "groups." + name
        if name == "all":
            raise _fail(p, "'all' is built in")
        members: list[int]
        if isinstance(spec, str):
            lo, sep, hi = spec.partition("-")
            if not sep or not lo.strip().isdigit() or not hi.strip().isdigit():
                raise _fail(p, 'must be a list of terminal numbers or "FROM-TO"')
            a, b = int(lo), int(hi)
            if not 1 <= a <= b <= MAX_TERMINALS:
                raise _fail(p, "range must go up, within 1..%d" % MAX_TERMINALS)
            members = list(range(a, b + 1))
        elif isinstance(spec, list) and spec:
            members = [_int(n, "%s[%d]" % (p, i), 1, MAX_TERMINALS) for i, n in enumerate(spec)]
        else:
            raise _fail(p, 'must be a list of terminal numbers or "FROM-TO"')
        out[name] = sorted(set(members))
    return out


def _events(rows: Any, devices: list[Device], groups: dict[str, list[int]]) -> list[Event]:
    if not isinstance(rows, list):
        raise _fail("event", "must be a list of [[event]] tables")
    by_unit = {d.unit: d for d in devices}
    out: list[Event] = []
    for i, given in enumerate(rows):
        p = "event[%d]" % i
        row = _table(given, p)
        at = _num(row.get("at"), p + ".at", 0, 10 * 365 * 86400)
        action = _str(row.get("action"), p + ".action")
        if action not in ACTIONS:
            raise _fail(
                p + ".action", "unknown action %r; known: %s" % (action, ", ".join(ACTIONS))
            )
        required, optional = _EVENT_FIELDS[action]
        _keys(row, p, ("at", "action", "group", *required, *optional))
        group = _str(row.get("group", "all"), p + ".group")
        if group != "all" and group not in groups:
            raise _fail(p + ".group", "no group %r" % group)
        for key in required:
            if key not in row:
                raise _fail("%s.%s" % (p, key), "is required for %s" % action)
        fields = {k: row[k] for k in (*required, *optional) if k in row}
        _event_fields(fields, p, by_unit, inject=action == "inject")
        out.append(Event(at, action, group, fields))
    out.sort(key=lambda e: e.at)  # stable: same time keeps file order
    return out


def _event_fields(
    fields: dict[str, Any], p: str, by_unit: dict[int, Device], *, inject: bool
) -> None:
    checks: dict[str, Callable[[Any, str], Any]] = {
        "down": lambda v, q: _num(v, q, 0, 365 * 86400),
        "value": lambda v, q: _num(v, q, -1e12, 1e12),
        "point": _str,
        "fault": _str,
        "params": _table,
    }
    if "unit" in fields:
        unit = fields["unit"]
        if type(unit) is not int or unit not in by_unit:
            raise _fail(p + ".unit", "no device with unit %r" % (unit,))
    for key, value in fields.items():
        if key in checks:
            fields[key] = checks[key](value, "%s.%s" % (p, key))
    if "point" in fields:
        device = by_unit[fields["unit"]]
        names = device.points()
        if fields["point"] not in names:
            raise _fail(
                p + ".point",
                "%s has no point %r (%s)" % (device.model, fields["point"], ", ".join(names)),
            )
    if "fault" in fields and fields["fault"] not in FAULTS:
        raise _fail(
            p + ".fault", "unknown fault %r; known: %s" % (fields["fault"], ", ".join(FAULTS))
        )
    if inject:
        points = tuple(by_unit[fields["unit"]].points())
        try:
            normalise(fields["fault"], fields.setdefault("params", {}), points)
        except FaultError as err:
            raise _fail(p + ".params", str(err)) from err
