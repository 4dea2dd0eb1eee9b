"""Simulated sensor devices: physics + a profile's register map + value faults.

A device turns simulated time into the register image of its model, the
sensor profile the terminal reads it with (``edge/models/*.json``, see
:mod:`firmware_sim.registers`). A device class is a kind of physics (an
insulation monitor, a power meter, a thermo-hygrometer, contact inputs); it
computes quantities in canonical units (kW, kWh, V, A, Hz, degC, %RH, mA)
and each point of the model takes the quantity its ``kind`` names, in the
point's unit. So any model whose points a class can supply runs on it:
``PowerMeter`` simulates the SDM630 as well as the PM-300 test meter.

The pipeline for every read is::

    physics(t)  ->  set-point overrides  ->  stuck values  ->  spikes  ->  raw -> words

Physics is pure (see :mod:`firmware_sim.physics`); the only state a device
keeps is what a real one would: its fault switches, set-point overrides,
frozen ("stuck") raw values, and the energy counter's cache.

Transport-level faults (silence, delay, bad CRC, wrong unit id, exception
replies) and the baud rate a device listens at are applied by
:class:`firmware_sim.bus.Bus`, which owns the devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pymodbus.constants import ExcCodes

from . import physics
from .errors import ConfigError, FaultError
from .faults import Faults, check_name, normalise
from .registers import Model, Point
from .registers import model as builtin_model
from .registers import names as model_names

# Engineering units a point may use for a quantity, as multiples of the
# canonical unit (the first of each kind).
_UNITS: dict[str, dict[str, float]] = {
    "power": {"kW": 1.0, "W": 1000.0, "MW": 0.001},
    "energy": {"kWh": 1.0, "Wh": 1000.0, "MWh": 0.001},
    "voltage": {"V": 1.0, "kV": 0.001},
    "current": {"A": 1.0, "mA": 1000.0},
    "leak": {"mA": 1.0, "A": 0.001},
    "frequency": {"Hz": 1.0},
    "temperature": {"degC": 1.0},
    "humidity": {"%RH": 1.0},
    "pf": {"": 1.0},
    "contact": {"": 1.0},
}


def quantity(point: Point) -> str:
    """The physics quantity a point reads: its kind; ``io``/``ior`` for leakage."""
    if point.kind == "leak":
        return "io" if point.name == "io" else "ior"
    return point.kind


def unit_factor(point: Point) -> float:
    """Engineering value of the point per canonical unit of its quantity."""
    return _UNITS.get(point.kind, {}).get(point.unit, 1.0)


@dataclass(frozen=True)
class Site:
    """What every device on one bus shares: the room's climate and supply.

    ``start`` is the simulated time the devices were installed: degradation
    and the energy counter count from it.
    """

    seed: int = 0
    start: float = 0.0
    climate: physics.Climate = field(default_factory=physics.Climate)

    @classmethod
    def create(cls, seed: int, start: float) -> Site:
        """A site whose climate noise is derived from ``seed``."""
        return cls(seed, start, physics.Climate(seed=seed))

    def voltage(self, t: float) -> float:
        """Supply voltage, V: the meter and the insulation monitor see the same line."""
        c = self.climate
        shape = physics.office_shape(
            physics.local_hours(t, c.tz_hours), physics.local_weekday(t, c.tz_hours)
        )
        return physics.line_voltage(t, self.seed, shape)


def device_seed(site_seed: int, kind: str, unit: int) -> int:
    """Per-device seed, so two meters on one bus do not read alike."""
    return int(physics.hashed_unit(site_seed, kind, unit) * 2**62)


class Device:
    """Base class: value pipeline, overrides and value faults; subclasses add physics.

    ``model`` names the sensor profile the device serves (default
    :attr:`default_model`); ``baud`` the rate it listens at (default the
    model's factory rate). Raises :class:`ConfigError` for a bad unit id,
    an unknown parameter or model, or a model with points this physics
    cannot supply.
    """

    kind = ""
    default_model = ""
    #: Point kinds the physics supplies.
    supplies: ClassVar[frozenset[str]] = frozenset()
    #: Constructor parameters a subclass accepts (name -> default), settable
    #: from the command line as ``kind:unit:name=value``.
    params: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        unit: int,
        site: Site,
        *,
        model: str | Model | None = None,
        baud: int | None = None,
        **params: float,
    ) -> None:
        if isinstance(unit, bool) or not isinstance(unit, int) or not 1 <= unit <= 247:
            raise ConfigError(f"unit id must be 1..247, got {unit!r}")
        unknown = set(params) - set(self.params)
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ConfigError(
                f"{self.kind}: unknown parameter {', '.join(sorted(unknown))} (known: {known})"
            )
        self.model = (
            model if isinstance(model, Model) else builtin_model(model or self.default_model)
        )
        missing = sorted({p.kind for p in self.model.points} - self.supplies)
        if missing:
            raise ConfigError(
                f"{self.kind} physics cannot simulate {self.model.name}: "
                f"no {', '.join(missing)} (it supplies {', '.join(sorted(self.supplies))})"
            )
        if baud is not None and (isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0):
            raise ConfigError(f"baud rate must be a positive integer, got {baud!r}")
        self.baud = baud or self.model.baud
        self.unit = unit
        self.site = site
        self.seed = device_seed(site.seed, self.kind, unit)
        # what a serial-number register of the model reads
        self.serial = 10_000_000 + int(physics.hashed_unit(self.seed, "serial", 0) * 89_999_999)
        self.settings = {**self.params, **{k: float(v) for k, v in params.items()}}
        self.faults = Faults(self.seed)
        self.overrides: dict[str, float] = {}
        self.forced: dict[str, float] = {}  # quantity -> canonical value, from overrides
        self._stuck: dict[str, int | float] = {}
        self._names = tuple(p.name for p in self.model.points)

    # -- physics -------------------------------------------------------------

    def quantities(self, t: float) -> dict[str, Any]:
        """Canonical value of every quantity the physics supplies at ``t``.

        Derived quantities honour :attr:`forced` (e.g. energy follows a forced power).
        """
        raise NotImplementedError

    def physics(self, t: float) -> dict[str, float]:
        """Engineering value of every point at ``t``, in the point's unit."""
        q = self.quantities(t)
        seen: dict[str, int] = {}
        out: dict[str, float] = {}
        for p in self.model.points:
            key = quantity(p)
            k = seen.get(key, 0)
            seen[key] = k + 1
            if key == "contact":
                contacts = q["contact"]
                out[p.name] = float(contacts[k % len(contacts)])
                continue
            value = q[key]
            if k and key in ("voltage", "current"):
                # the phases of a three-phase meter differ a little
                value *= 1.0 + 0.004 * k * physics.noise(self.seed, p.name, 0.0, 1.0)
            out[p.name] = value * unit_factor(p)
        return out

    def on_override(self, quantity: str, value: float | None, t: float) -> None:
        """Hook: ``quantity`` was forced to the canonical ``value`` (None: released) at ``t``."""

    # -- value pipeline ------------------------------------------------------

    def values(self, t: float) -> dict[str, float]:
        """Engineering values with overrides applied (no stuck values, no spikes)."""
        values = self.physics(t)
        values.update(self.overrides)
        return values

    def raw(self, t: float, spikes: bool = True) -> dict[str, int | float]:
        """Raw point values one read at ``t`` returns: overrides, stuck values, spikes.

        ``spikes=False`` skips the spike draw (status reports, capturing stuck values).
        """
        values = self.values(t)
        spike = self.faults.hits("spikes") if spikes else None
        if spike is not None:
            for name in spike["points"] or self._analogue():
                if name in self.overrides:
                    continue
                point = self.model.point(name)
                if point.type == "bit":
                    values[name] = 0.0 if values[name] else 1.0
                else:
                    values[name] = values[name] * spike["factor"]
        raw = {p.name: p.to_raw(values[p.name]) for p in self.model.points}
        for name, frozen in self._stuck.items():
            if name not in self.overrides:
                raw[name] = frozen
        return raw

    def _analogue(self) -> list[str]:
        return [p.name for p in self.model.points if p.type != "bit"]

    def read(self, fc: int, address: int, count: int, t: float) -> list[int] | ExcCodes:
        """Serve a read request: the words (or bits) asked for, or the exception code.

        ILLEGAL_FUNCTION for a function code the model does not answer,
        ILLEGAL_ADDRESS if the range is not in its map (see
        :meth:`firmware_sim.registers.Model.serves`).
        """
        if fc not in self.model.function_codes:
            return ExcCodes.ILLEGAL_FUNCTION
        table = self.model.image(self.raw(t), self.unit, self.baud, self.serial)[fc]
        words = self.model.serves(table, address, count)
        return ExcCodes.ILLEGAL_ADDRESS if words is None else words

    # -- run-time control ----------------------------------------------------

    def _point(self, name: str) -> Point:
        if name not in self._names:
            raise FaultError(f"{self.model.name} has no point {name!r}; have {self._names}")
        return self.model.point(name)

    def set_value(self, point: str, value: float, t: float) -> None:
        """Force ``point`` to the engineering ``value`` until :meth:`clear_value`."""
        p = self._point(point)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise FaultError(f"value for {point} must be a number, got {value!r}")
        self.overrides[point] = float(value)
        key = quantity(p)
        if key != "contact":
            self.forced[key] = float(value) / unit_factor(p)
            self.on_override(key, self.forced[key], t)

    def clear_value(self, point: str | None, t: float) -> None:
        """Drop the override of ``point`` (every override when None)."""
        names = list(self.overrides) if point is None else [self._point(point).name]
        for name in names:
            if self.overrides.pop(name, None) is None:
                continue
            key = quantity(self.model.point(name))
            if key != "contact" and self.forced.pop(key, None) is not None:
                self.on_override(key, None, t)

    def inject(self, name: str, t: float, /, **params: Any) -> None:
        """Switch fault ``name`` on (see :mod:`firmware_sim.faults`); ``FaultError`` if invalid."""
        settings = normalise(name, params, self._names)
        if name == "stuck":
            current = self.raw(t, spikes=False)
            points = settings["points"] or list(self._names)
            self._stuck = {p: current[p] for p in points}
        self.faults.set(name, settings)

    def clear(self, name: str | None = None) -> None:
        """Switch fault ``name`` off (every fault when None)."""
        if name is not None:
            check_name(name)
        self.faults.clear(name)
        if name in (None, "stuck"):
            self._stuck = {}

    def status(self, t: float) -> dict[str, Any]:
        """What the control channel reports about this device."""
        raw = self.raw(t, spikes=False)
        return {
            "unit": self.unit,
            "kind": self.kind,
            "model": self.model.name,
            "baud": self.baud,
            "values": {p.name: p.to_value(raw[p.name]) for p in self.model.points},
            "faults": self.faults.active(),
            "overrides": dict(self.overrides),
            "settings": dict(self.settings),
        }


class InsulationMonitor(Device):
    """Insulation (leakage) monitor: leakage current Io, resistive leakage Ior, voltage."""

    kind = "insulation"
    default_model = "IM-100"
    supplies = frozenset({"leak", "voltage"})
    params: ClassVar[dict[str, float]] = {
        "ior_base": 1.2,
        "humidity_gain": 4.0,
        "rh_threshold": 60.0,
        "degradation": 0.3,
        "ic": 18.0,
    }

    def __init__(self, unit: int, site: Site, **params: Any) -> None:
        super().__init__(unit, site, **params)
        s = self.settings
        self.insulation = physics.Insulation(
            seed=self.seed,
            installed=site.start,
            ior_base=s["ior_base"],
            humidity_gain=s["humidity_gain"],
            rh_threshold=s["rh_threshold"],
            degradation=s["degradation"],
            ic=s["ic"],
        )

    def quantities(self, t: float) -> dict[str, Any]:
        rh = physics.humidity_rh(t, self.site.climate)
        ior = self.forced.get("ior", physics.ior_ma(t, self.insulation, rh))
        return {
            "io": physics.io_ma(t, self.insulation, ior),
            "ior": ior,
            "voltage": self.site.voltage(t),
        }


class PowerMeter(Device):
    """Power meter: active power, energy, voltage, current, power factor, frequency."""

    kind = "meter"
    default_model = "PM-300"
    supplies = frozenset({"power", "energy", "voltage", "current", "pf", "frequency"})
    params: ClassVar[dict[str, float]] = {"peak_kw": 80.0, "compressor_kw": 12.0, "e0": -1.0}

    def __init__(self, unit: int, site: Site, **params: Any) -> None:
        super().__init__(unit, site, **params)
        s = self.settings
        if not 0 < s["peak_kw"] <= 20_000_000 or not 0 <= s["compressor_kw"] <= s["peak_kw"]:
            raise ConfigError(f"{self.kind}: need 0 < compressor_kw <= peak_kw")
        self.profile = physics.LoadProfile(
            seed=self.seed, peak_kw=s["peak_kw"], compressor_kw=s["compressor_kw"]
        )
        # A meter is installed with energy already on its counter.
        if s["e0"] < 0:
            s["e0"] = round(10_000 + 40_000 * physics.hashed_unit(self.seed, "e0", 0), 1)
        self.counter = physics.EnergyCounter(self.profile, site.start)
        # Energy follows a forced power: kWh the override added or removed.
        self._adjust_kwh = 0.0
        self._kw_since: tuple[float, float, float] | None = None  # (start, value, E(start))

    def _override_adjustment(self, t: float) -> float:
        if self._kw_since is None:
            return self._adjust_kwh
        start, value, e_start = self._kw_since
        if t <= start:
            return self._adjust_kwh
        forced = value * (t - start) / physics.HOUR
        return self._adjust_kwh + forced - (self.counter.at(t) - e_start)

    def on_override(self, quantity: str, value: float | None, t: float) -> None:
        if quantity != "power":
            return
        self._adjust_kwh = self._override_adjustment(t)
        self._kw_since = None if value is None else (t, value, self.counter.at(t))

    def quantities(self, t: float) -> dict[str, Any]:
        forced = self.forced
        kw = forced.get("power", physics.load_kw(t, self.profile))
        shape = min(1.0, max(0.0, kw / self.profile.peak_kw))
        v = forced.get("voltage", self.site.voltage(t))
        pf = forced.get("pf", physics.power_factor(t, self.seed, shape))
        energy = self.settings["e0"] + self.counter.at(t) + self._override_adjustment(t)
        return {
            "power": kw,
            "energy": max(0.0, energy),
            "voltage": v,
            "current": physics.current_a(abs(kw), v, abs(pf)),
            "pf": pf,
            "frequency": physics.supply_frequency(t, self.site.seed),
        }


class WordSwappedPowerMeter(PowerMeter):
    """A power meter serving the PM-310 test map (32-bit values low word first)."""

    kind = "meter-cdab"
    default_model = "PM-310"


class ThermoHygrometer(Device):
    """Room temperature and relative humidity transmitter."""

    kind = "thermo"
    default_model = "TH-10"
    supplies = frozenset({"temperature", "humidity"})
    params: ClassVar[dict[str, float]] = {"offset": 0.0}

    def quantities(self, t: float) -> dict[str, Any]:
        c = self.site.climate
        # Each transmitter is calibrated a little differently.
        error = 0.3 * (2 * physics.hashed_unit(self.seed, "calibration", 0) - 1)
        return {
            "temperature": self.forced.get(
                "temperature", physics.temperature_c(t, c) + error + self.settings["offset"]
            ),
            "humidity": self.forced.get("humidity", physics.humidity_rh(t, c)),
        }


class DigitalInputs(Device):
    """Eight equipment contacts on schedules (see firmware_sim/README.md)."""

    kind = "di"
    default_model = "DI-8"
    supplies = frozenset({"contact"})
    params: ClassVar[dict[str, float]] = {"overheat_c": 35.0}

    def quantities(self, t: float) -> dict[str, Any]:
        contacts = physics.Contacts(
            seed=self.seed,
            tz_hours=self.site.climate.tz_hours,
            overheat_c=self.settings["overheat_c"],
        )
        temperature = physics.temperature_c(t, self.site.climate)
        return {"contact": physics.contact_states(t, contacts, temperature)}


KINDS: dict[str, type[Device]] = {
    cls.kind: cls
    for cls in (
        InsulationMonitor,
        PowerMeter,
        WordSwappedPowerMeter,
        ThermoHygrometer,
        DigitalInputs,
    )
}


def kind_for(model: str) -> str:
    """The physics kind that simulates the built-in ``model``; ``ConfigError`` if none can."""
    kinds = {p.kind for p in builtin_model(model).points}
    for kind, cls in KINDS.items():
        if kind != "meter-cdab" and kinds <= cls.supplies:
            return kind
    raise ConfigError(f"no simulated physics supplies every point of {model}")


def make_device(kind: str, unit: int, site: Site, **params: Any) -> Device:
    """Build a device of ``kind`` (insulation, meter, meter-cdab, thermo, di) or of a model.

    ``kind`` may name a built-in model instead (``SDM630``): the device gets
    the physics that supplies its points. ``model`` and ``baud`` in
    ``params`` choose the profile and the baud rate. Raises
    :class:`ConfigError` for an unknown kind or model, a bad unit id or parameter.
    """
    cls = KINDS.get(kind)
    if cls is None:
        if kind not in model_names():
            raise ConfigError(
                f"unknown device kind {kind!r}; known: {', '.join(KINDS)} "
                f"or a model ({', '.join(model_names())})"
            )
        params.setdefault("model", kind)
        cls = KINDS[kind_for(kind)]
    return cls(unit, site, **params)
