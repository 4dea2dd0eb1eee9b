"""Simulated sensor devices: physics + register map + value faults.

A device turns simulated time into the register image its model serves
(``docs/sensors.md``). The pipeline for every read is::

    physics(t)  ->  set-point overrides  ->  stuck values  ->  spikes  ->  raw -> words

Physics is pure (see :mod:`firmware_sim.physics`); the only state a device
keeps is what a real one would: its fault switches, set-point overrides,
frozen ("stuck") raw values, and the energy counter's cache.

Transport-level faults (silence, delay, bad CRC, wrong unit id, exception
replies) are applied by :class:`firmware_sim.bus.Bus`, which owns the devices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes

from . import physics
from .errors import ConfigError, FaultError
from .faults import Faults, check_name, normalise
from .registers import DI_8, IM_100, PM_300, PM_310, TH_10, Model


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
    """Base class: value pipeline, overrides and value faults; subclasses add physics."""

    kind = ""
    model: Model
    #: Constructor parameters a subclass accepts (name -> default), settable
    #: from the command line as ``kind:unit:name=value``.
    params: dict[str, float] = {}

    def __init__(self, unit: int, site: Site, **params: float) -> None:
        if isinstance(unit, bool) or not isinstance(unit, int) or not 1 <= unit <= 247:
            raise ConfigError(f"unit id must be 1..247, got {unit!r}")
        unknown = set(params) - set(self.params)
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ConfigError(
                f"{self.kind}: unknown parameter {', '.join(sorted(unknown))} (known: {known})"
            )
        self.unit = unit
        self.site = site
        self.seed = device_seed(site.seed, self.kind, unit)
        self.settings = {**self.params, **{k: float(v) for k, v in params.items()}}
        self.faults = Faults(self.seed)
        self.overrides: dict[str, float] = {}
        self._stuck: dict[str, int] = {}
        self._names = tuple(p.name for p in self.model.points)

    # -- physics -------------------------------------------------------------

    def physics(self, t: float) -> dict[str, float]:
        """Engineering value of every point at ``t``; derived points honour overrides."""
        raise NotImplementedError

    def on_override(self, point: str, value: float | None, t: float) -> None:
        """Hook: an override of ``point`` was set (``value``) or cleared (None) at ``t``."""

    # -- value pipeline ------------------------------------------------------

    def values(self, t: float) -> dict[str, float]:
        """Engineering values with overrides applied (no stuck values, no spikes)."""
        values = self.physics(t)
        values.update(self.overrides)
        return values

    def raw(self, t: float, spikes: bool = True) -> dict[str, int]:
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
        ILLEGAL_ADDRESS if any address in the range is not in its map.
        """
        if fc not in self.model.function_codes:
            return ExcCodes.ILLEGAL_FUNCTION
        table = self.model.image(self.raw(t))[fc]
        try:
            return [table[a] for a in range(address, address + count)]
        except KeyError:
            return ExcCodes.ILLEGAL_ADDRESS

    # -- run-time control ----------------------------------------------------

    def _point(self, name: str) -> str:
        if name not in self._names:
            raise FaultError(f"{self.model.name} has no point {name!r}; have {self._names}")
        return name

    def set_value(self, point: str, value: float, t: float) -> None:
        """Force ``point`` to the engineering ``value`` until :meth:`clear_value`."""
        self._point(point)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise FaultError(f"value for {point} must be a number, got {value!r}")
        self.overrides[point] = float(value)
        self.on_override(point, float(value), t)

    def clear_value(self, point: str | None, t: float) -> None:
        """Drop the override of ``point`` (every override when None)."""
        names = list(self.overrides) if point is None else [self._point(point)]
        for name in names:
            if self.overrides.pop(name, None) is not None:
                self.on_override(name, None, t)

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
            "model_code": self.model.code,
            "values": {p.name: p.to_value(raw[p.name]) for p in self.model.points},
            "faults": self.faults.active(),
            "overrides": dict(self.overrides),
            "settings": dict(self.settings),
        }


class InsulationMonitor(Device):
    """IM-100: leakage current Io, resistive leakage Ior, circuit voltage."""

    kind = "insulation"
    model = IM_100
    params = {
        "ior_base": 1.2,
        "humidity_gain": 4.0,
        "rh_threshold": 60.0,
        "degradation": 0.3,
        "ic": 18.0,
    }

    def __init__(self, unit: int, site: Site, **params: float) -> None:
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

    def physics(self, t: float) -> dict[str, float]:
        ov = self.overrides
        rh = physics.humidity_rh(t, self.site.climate)
        ior = ov.get("ior", physics.ior_ma(t, self.insulation, rh))
        return {
            "io": physics.io_ma(t, self.insulation, ior),
            "ior": ior,
            "v": self.site.voltage(t),
        }


class PowerMeter(Device):
    """PM-300 (and, with ``model=PM_310``, the word-swapped PM-310)."""

    kind = "meter"
    model = PM_300
    params = {"peak_kw": 80.0, "compressor_kw": 12.0, "e0": -1.0}

    def __init__(self, unit: int, site: Site, **params: float) -> None:
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
        # Energy follows a forced kW value: kWh the override added or removed.
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

    def on_override(self, point: str, value: float | None, t: float) -> None:
        if point != "kw":
            return
        self._adjust_kwh = self._override_adjustment(t)
        self._kw_since = None if value is None else (t, value, self.counter.at(t))

    def physics(self, t: float) -> dict[str, float]:
        ov = self.overrides
        kw = ov.get("kw", physics.load_kw(t, self.profile))
        shape = min(1.0, max(0.0, kw / self.profile.peak_kw))
        v = ov.get("v", self.site.voltage(t))
        pf = ov.get("pf", physics.power_factor(t, self.seed, shape))
        energy = self.settings["e0"] + self.counter.at(t) + self._override_adjustment(t)
        return {
            "kw": kw,
            "kwh": max(0.0, energy),
            "v": v,
            "a": physics.current_a(abs(kw), v, abs(pf)),
            "pf": pf,
        }


class WordSwappedPowerMeter(PowerMeter):
    """PM-310: a PM-300 that sends 32-bit values low word first."""

    kind = "meter-cdab"
    model = PM_310


class ThermoHygrometer(Device):
    """TH-10: room temperature and relative humidity."""

    kind = "thermo"
    model = TH_10
    params = {"offset": 0.0}

    def physics(self, t: float) -> dict[str, float]:
        c = self.site.climate
        # Each transmitter is calibrated a little differently.
        error = 0.3 * (2 * physics.hashed_unit(self.seed, "calibration", 0) - 1)
        return {
            "t": physics.temperature_c(t, c) + error + self.settings["offset"],
            "rh": physics.humidity_rh(t, c),
        }


class DigitalInputs(Device):
    """DI-8: eight equipment contacts on schedules (see firmware_sim/README.md)."""

    kind = "di"
    model = DI_8
    params = {"overheat_c": 35.0}

    def physics(self, t: float) -> dict[str, float]:
        contacts = physics.Contacts(
            seed=self.seed,
            tz_hours=self.site.climate.tz_hours,
            overheat_c=self.settings["overheat_c"],
        )
        temperature = physics.temperature_c(t, self.site.climate)
        states = physics.contact_states(t, contacts, temperature)
        return {f"di{i + 1}": float(s) for i, s in enumerate(states)}


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


def make_device(kind: str, unit: int, site: Site, **params: float) -> Device:
    """Build a device of ``kind`` (insulation, meter, meter-cdab, thermo, di).

    Raises :class:`ConfigError` for an unknown kind, a bad unit id or parameter.
    """
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown device kind {kind!r}; known: {', '.join(KINDS)}") from None
    return cls(unit, site, **params)
