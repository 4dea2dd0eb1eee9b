"""Plausible physics for an electrical room, as pure functions of simulated time.

Every function here takes the simulated time ``t`` (Unix epoch seconds) and
frozen parameter objects and returns the same result for the same inputs: no
hidden state, no ``random`` module. Randomness comes from :func:`noise`, a
smooth value noise derived by hashing ``(seed, key, time bucket)``, so a test
can jump a month ahead and still get exactly what a run that lived through the
month would report.

What is modelled (local time = JST unless ``tz_hours`` says otherwise):

- temperature: seasonal mean, daily cycle with its minimum near 05:00 and its
  maximum near 14:00, slow weather noise;
- relative humidity: moves against the daily temperature cycle, wetter summer;
- office load: low at night, ramp from 08:00, lunch dip, peak at 14:00, low on
  weekends, air-conditioning compressors that cycle within each 30-minute
  demand period (so 30-minute demand differs from slot to slot);
- voltage, power factor, current derived from the load; supply frequency;
- leakage: resistive leakage Ior rises with humidity and creeps up as the
  insulation degrades (mA per week), Io adds the capacitive part;
- contacts: equipment that switches on schedules, rare fault contacts.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
DEMAND_PERIOD = 30 * MINUTE

_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-distributed 64-bit integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def hashed_unit(seed: int, key: str, k: int) -> float:
    """Deterministic uniform number in [0, 1) for ``(seed, key, k)``.

    ``zlib.crc32`` rather than ``hash()``: string hashes are salted per process.
    """
    h = _mix(_mix(seed & _M64) ^ zlib.crc32(key.encode()))
    return _mix(h ^ (k & _M64)) / 2.0**64


def noise(seed: int, key: str, t: float, period: float) -> float:
    """Smooth deterministic noise in [-1, 1] that changes over ``period`` seconds."""
    x = t / period
    k = math.floor(x)
    f = x - k
    a = 2.0 * hashed_unit(seed, key, k) - 1.0
    b = 2.0 * hashed_unit(seed, key, k + 1) - 1.0
    s = f * f * (3.0 - 2.0 * f)
    return a + (b - a) * s


def local_hours(t: float, tz_hours: float = 9.0) -> float:
    """Hour of the local day, 0 <= h < 24."""
    return ((t + tz_hours * HOUR) % DAY) / HOUR


def local_weekday(t: float, tz_hours: float = 9.0) -> int:
    """Local day of the week, Monday = 0 (1970-01-01 was a Thursday)."""
    return int(((t + tz_hours * HOUR) // DAY + 3) % 7)


def day_of_year(t: float, tz_hours: float = 9.0) -> float:
    """Approximate local day of the year, 0 <= d < 365.25 (good enough for seasons)."""
    return ((t + tz_hours * HOUR) / DAY) % 365.2425


def daily_cycle(hours: float) -> float:
    """Daily shape in [-1, 1]: -1 at 05:00, +1 at 14:00, smooth in between.

    Warming takes 9 hours and cooling 15, as in a real day.
    """
    if 5.0 <= hours < 14.0:
        return -math.cos(math.pi * (hours - 5.0) / 9.0)
    since_peak = (hours - 14.0) % 24.0
    return math.cos(math.pi * since_peak / 15.0)


def seasonal_cycle(doy: float) -> float:
    """Seasonal shape in [-1, 1]: +1 in early August, -1 in early February."""
    return math.cos(2.0 * math.pi * (doy - 213.0) / 365.2425)


@dataclass(frozen=True)
class Climate:
    """Climate of the room a T/RH transmitter (and the insulation) sees."""

    seed: int = 0
    t_mean: float = 17.0  # degC, yearly mean
    t_season: float = 9.0  # degC, half the summer-winter swing
    t_daily: float = 4.0  # degC, half the day-night swing
    t_weather: float = 2.0  # degC, slow weather noise
    rh_mean: float = 62.0  # %RH
    rh_season: float = 8.0  # %RH, wetter summer
    rh_daily: float = 14.0  # %RH, drier afternoons
    rh_weather: float = 6.0  # %RH
    tz_hours: float = 9.0  # JST


def temperature_c(t: float, climate: Climate) -> float:
    """Room temperature, degC."""
    c = climate
    return (
        c.t_mean
        + c.t_season * seasonal_cycle(day_of_year(t, c.tz_hours))
        + c.t_daily * daily_cycle(local_hours(t, c.tz_hours))
        + c.t_weather * noise(c.seed, "temperature", t, 6 * HOUR)
        + 0.15 * noise(c.seed, "temperature-fast", t, 10 * MINUTE)
    )


def humidity_rh(t: float, climate: Climate) -> float:
    """Relative humidity, %RH, clipped to the 5..99 range a transmitter reports."""
    c = climate
    rh = (
        c.rh_mean
        + c.rh_season * seasonal_cycle(day_of_year(t, c.tz_hours))
        - c.rh_daily * daily_cycle(local_hours(t, c.tz_hours))
        + c.rh_weather * noise(c.seed, "humidity", t, 8 * HOUR)
        + 0.5 * noise(c.seed, "humidity-fast", t, 10 * MINUTE)
    )
    return max(5.0, min(99.0, rh))


# Office building, fraction of the contract peak, by local hour (linear in between).
_WEEKDAY_LOAD = (
    (0.0, 0.24),
    (6.5, 0.24),
    (8.0, 0.32),
    (9.0, 0.80),
    (12.0, 0.86),
    (12.25, 0.66),
    (13.0, 0.70),
    (14.0, 0.95),
    (17.0, 0.84),
    (19.0, 0.42),
    (21.0, 0.27),
    (24.0, 0.24),
)
_WEEKEND_LOAD = ((0.0, 0.22), (24.0, 0.22))


def _interpolate(table: tuple[tuple[float, float], ...], x: float) -> float:
    for (x0, y0), (x1, y1) in itertools.pairwise(table):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return table[-1][1]


def office_shape(hours: float, weekday: int) -> float:
    """Building load as a fraction of peak for a local hour and weekday (Mon = 0)."""
    return _interpolate(_WEEKEND_LOAD if weekday >= 5 else _WEEKDAY_LOAD, hours)


@dataclass(frozen=True)
class LoadProfile:
    """Office building load seen by a power meter."""

    seed: int = 0
    peak_kw: float = 80.0
    compressor_kw: float = 12.0  # air conditioning that cycles per demand period
    tz_hours: float = 9.0


def compressor_duty(t: float, profile: LoadProfile) -> float:
    """Fraction of the 30-minute demand period the compressors run, whole minutes."""
    slot = math.floor(t / DEMAND_PERIOD)
    slot_start = slot * DEMAND_PERIOD
    occupancy = office_shape(
        local_hours(slot_start, profile.tz_hours), local_weekday(slot_start, profile.tz_hours)
    )
    season = abs(seasonal_cycle(day_of_year(slot_start, profile.tz_hours)))
    duty = occupancy * (0.4 + 0.5 * season) + 0.25 * (hashed_unit(profile.seed, "duty", slot) - 0.5)
    return max(0.0, min(30.0, round(30.0 * duty))) / 30.0


def load_kw(t: float, profile: LoadProfile) -> float:
    """Active power drawn by the building, kW (never negative)."""
    p = profile
    hours = local_hours(t, p.tz_hours)
    shape = office_shape(hours, local_weekday(t, p.tz_hours))
    season = 0.88 + 0.12 * seasonal_cycle(day_of_year(t, p.tz_hours)) ** 2
    into_slot = (t % DEMAND_PERIOD) / DEMAND_PERIOD
    compressors = p.compressor_kw if into_slot < compressor_duty(t, p) else 0.0
    base = (p.peak_kw - p.compressor_kw) * shape * season
    wobble = p.peak_kw * (
        0.02 * noise(p.seed, "load", t, 5 * MINUTE) + 0.008 * noise(p.seed, "load-fast", t, 20.0)
    )
    return max(0.0, base + compressors + wobble)


def line_voltage(t: float, seed: int, load_fraction: float) -> float:
    """Line-to-line voltage of a 200 V three-phase supply, V; sags a little under load."""
    return 203.0 - 3.0 * load_fraction + 1.5 * noise(seed, "voltage", t, 10 * MINUTE)


def power_factor(t: float, seed: int, load_fraction: float) -> float:
    """Power factor: poorer at light load (transformers, idle motors)."""
    pf = 0.86 + 0.10 * min(1.0, load_fraction) + 0.01 * noise(seed, "pf", t, 15 * MINUTE)
    return max(0.5, min(1.0, pf))


def supply_frequency(t: float, seed: int) -> float:
    """Supply frequency, Hz: 60 Hz (western Japan) held within a few hundredths."""
    return 60.0 + 0.02 * noise(seed, "frequency", t, 5 * MINUTE)


def current_a(kw: float, volts: float, pf: float) -> float:
    """Line current of a balanced three-phase load, A."""
    if volts <= 0 or pf <= 0:
        return 0.0
    return kw * 1000.0 / (math.sqrt(3.0) * volts * pf)


def energy_kwh(t: float, profile: LoadProfile, t0: float, step: float = MINUTE) -> float:
    """Energy drawn between ``t0`` and ``t``, kWh (0 for ``t <= t0``).

    Trapezoids of ``step`` seconds on a grid anchored at ``t0`` plus one partial
    step, so the result depends only on its arguments. Cost grows with
    ``t - t0`` (about 10 000 steps per simulated week); :class:`EnergyCounter`
    caches the grid sum for repeated reads.
    """
    return EnergyCounter(profile, t0, step).at(t)


class EnergyCounter:
    """Cached evaluation of :func:`energy_kwh`; same results, incremental cost.

    The cache only holds sums up to grid points, so the value never depends on
    the order or times of earlier calls. Going back before the cached grid
    point restarts the sum from ``t0``.
    """

    def __init__(self, profile: LoadProfile, t0: float, step: float = MINUTE) -> None:
        if step <= 0:
            raise ValueError("step must be > 0")
        self.profile = profile
        self.t0 = t0
        self.step = step
        self._k = 0  # grid points summed
        self._kws = 0.0  # kW*s up to grid point k
        self._p_k = load_kw(t0, profile)

    def at(self, t: float) -> float:
        """Energy drawn between ``t0`` and ``t``, kWh."""
        if t <= self.t0:
            return 0.0
        k = int((t - self.t0) // self.step)
        if k < self._k:
            self._k, self._kws, self._p_k = 0, 0.0, load_kw(self.t0, self.profile)
        while self._k < k:
            t_next = self.t0 + (self._k + 1) * self.step
            p_next = load_kw(t_next, self.profile)
            self._kws += (self._p_k + p_next) * 0.5 * self.step
            self._k += 1
            self._p_k = p_next
        t_k = self.t0 + self._k * self.step
        partial = (self._p_k + load_kw(t, self.profile)) * 0.5 * (t - t_k)
        return (self._kws + partial) / HOUR


@dataclass(frozen=True)
class Insulation:
    """Leakage behaviour of the circuit an insulation monitor watches."""

    seed: int = 0
    installed: float = 0.0  # epoch seconds the degradation counts from
    ior_base: float = 1.2  # mA, resistive leakage of healthy, dry insulation
    humidity_gain: float = 4.0  # mA added as RH goes from rh_threshold to 100 %
    rh_threshold: float = 60.0  # %RH below which humidity does not matter
    degradation: float = 0.3  # mA of Ior added per week of service
    ic: float = 18.0  # mA, capacitive leakage (cable and filter capacitance)


def ior_ma(t: float, ins: Insulation, rh: float) -> float:
    """Resistive leakage Ior, mA, at relative humidity ``rh``."""
    wet = max(0.0, rh - ins.rh_threshold) / max(1.0, 100.0 - ins.rh_threshold)
    weeks = max(0.0, t - ins.installed) / WEEK
    value = (
        ins.ior_base * (1.0 + 0.15 * noise(ins.seed, "ior", t, 20 * MINUTE))
        + ins.humidity_gain * wet
        + ins.degradation * weeks
        + 0.05 * noise(ins.seed, "ior-fast", t, 30.0)
    )
    return max(0.0, value)


def io_ma(t: float, ins: Insulation, ior: float) -> float:
    """Total leakage Io, mA: Ior in phase plus the capacitive part in quadrature."""
    ic = ins.ic * (1.0 + 0.03 * noise(ins.seed, "ic", t, HOUR))
    return math.hypot(ior, ic)


@dataclass(frozen=True)
class Contacts:
    """Schedules behind the eight contacts of a DI-8 (see firmware_sim/README.md)."""

    seed: int = 0
    tz_hours: float = 9.0
    overheat_c: float = 35.0  # transformer over-temperature contact closes above this


def contact_states(t: float, contacts: Contacts, temperature: float) -> list[int]:
    """States of di1..di8 (1 = closed) at ``t`` with the room at ``temperature`` degC."""
    c = contacts
    hours = local_hours(t, c.tz_hours)
    weekday = local_weekday(t, c.tz_hours)
    workday = weekday < 5
    # di1 drainage pump: runs 10 minutes in every 30, phase fixed per device.
    phase = hashed_unit(c.seed, "pump-phase", 0) * DEMAND_PERIOD
    pump = ((t + phase) % DEMAND_PERIOD) < 10 * MINUTE
    # di2 air-handling unit: weekdays 07:30-19:00.
    ahu = workday and 7.5 <= hours < 19.0
    # di3 lighting contactor: every day 06:00-22:00.
    lights = 6.0 <= hours < 22.0
    # di4 transformer over-temperature (fault contact).
    overheat = temperature >= c.overheat_c
    # di5 door, closed = 1: on workdays 08:00-18:00, each hour has a 30 % chance of
    # one visit that keeps the door open for 2-5 minutes.
    hour_index = math.floor(t / HOUR)
    door_open = False
    if workday and 8.0 <= hours < 18.0 and hashed_unit(c.seed, "door", hour_index) < 0.3:
        opens = hashed_unit(c.seed, "door-at", hour_index) * 50 * MINUTE
        lasts = (2 + 3 * hashed_unit(c.seed, "door-for", hour_index)) * MINUTE
        door_open = opens <= (t % HOUR) < opens + lasts
    # di6 breaker trip and di8 UPS on battery: fault contacts, open unless a
    # scenario forces them.
    # di7 emergency generator: weekly no-load test, Mondays 10:00-10:10.
    generator = weekday == 0 and 10.0 <= hours < 10.0 + 10 / 60
    states = (pump, ahu, lights, overheat, not door_open, False, generator, False)
    return [1 if s else 0 for s in states]
