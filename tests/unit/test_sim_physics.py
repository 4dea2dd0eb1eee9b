"""Physics of the simulated sensors: ranges, daily shapes, determinism, trends."""

from __future__ import annotations

import datetime as dt
import itertools
import statistics

import pytest

from firmware_sim import physics as ph

JST = dt.timezone(dt.timedelta(hours=9))
HOUR = 3600.0
DAY = 86400.0


def jst(*args: int) -> float:
    return dt.datetime(*args, tzinfo=JST).timestamp()


MONDAY = jst(2026, 6, 1)  # a Monday
SATURDAY = jst(2026, 6, 6)


def test_calendar_helpers_agree_with_datetime():
    for t in (MONDAY, SATURDAY, jst(2026, 12, 31, 23, 59), jst(2027, 2, 28, 5)):
        local = dt.datetime.fromtimestamp(t, JST)
        assert ph.local_weekday(t) == local.weekday()
        assert ph.local_hours(t) == pytest.approx(local.hour + local.minute / 60)


def test_daily_cycle_has_its_minimum_at_5_and_maximum_at_14():
    hours = [h / 4 for h in range(96)]
    shape = [ph.daily_cycle(h) for h in hours]
    assert hours[shape.index(min(shape))] == 5.0
    assert hours[shape.index(max(shape))] == 14.0
    assert min(shape) == pytest.approx(-1) and max(shape) == pytest.approx(1)
    # continuous everywhere, including the joins and midnight
    fine = [ph.daily_cycle(m / 60) for m in range(24 * 60 + 1)]
    assert max(abs(b - a) for a, b in itertools.pairwise(fine)) < 0.01
    assert fine[0] == pytest.approx(fine[-1])


def _mean_by_hour(fn, start: float, days: int) -> list[float]:
    return [
        statistics.fmean(fn(start + d * DAY + h * HOUR) for d in range(days)) for h in range(24)
    ]


def test_temperature_is_coolest_near_5_and_warmest_near_14_and_humidity_opposite():
    climate = ph.Climate(seed=11)
    temps = _mean_by_hour(lambda t: ph.temperature_c(t, climate), MONDAY, 30)
    rhs = _mean_by_hour(lambda t: ph.humidity_rh(t, climate), MONDAY, 30)
    assert temps.index(min(temps)) in (4, 5, 6)
    assert temps.index(max(temps)) in (13, 14, 15)
    assert rhs.index(max(rhs)) in (4, 5, 6)
    assert rhs.index(min(rhs)) in (13, 14, 15)
    assert max(temps) - min(temps) > 5  # a real day-night swing, not noise


def test_summer_is_warmer_than_winter():
    climate = ph.Climate(seed=2)
    august = statistics.fmean(
        ph.temperature_c(jst(2026, 8, 1) + i * 7 * HOUR, climate) for i in range(100)
    )
    february = statistics.fmean(
        ph.temperature_c(jst(2026, 2, 1) + i * 7 * HOUR, climate) for i in range(100)
    )
    assert august - february > 12


def test_values_stay_in_plausible_ranges_over_a_year():
    climate = ph.Climate(seed=5)
    profile = ph.LoadProfile(seed=5, peak_kw=80.0)
    ins = ph.Insulation(seed=5, installed=jst(2026, 1, 1), degradation=0.0)
    start = jst(2026, 1, 1)
    for i in range(0, 365 * 24 * 4, 7):  # every 105 minutes for a year
        t = start + i * 15 * 60
        temp = ph.temperature_c(t, climate)
        rh = ph.humidity_rh(t, climate)
        kw = ph.load_kw(t, profile)
        frac = kw / profile.peak_kw
        volts = ph.line_voltage(t, 5, frac)
        pf = ph.power_factor(t, 5, frac)
        ior = ph.ior_ma(t, ins, rh)
        assert -5 < temp < 40
        assert 5 <= rh <= 99
        assert 0 <= kw <= 1.1 * profile.peak_kw
        assert 195 < volts < 206
        assert 0.8 < pf <= 1.0
        assert 0 <= ior < 8
        assert ph.io_ma(t, ins, ior) >= ior
        amps = ph.current_a(kw, volts, pf)
        assert 0 <= amps < 655  # fits the u16 0.01 A register


def test_office_load_follows_the_working_day():
    profile = ph.LoadProfile(seed=1, peak_kw=100.0, compressor_kw=0.0)

    def mean_at(day_start: float, hour: float) -> float:
        return statistics.fmean(
            ph.load_kw(day_start + w * 7 * DAY + hour * HOUR + s * 30, profile)
            for w in range(4)
            for s in range(10)
        )

    night, early = mean_at(MONDAY, 3), mean_at(MONDAY, 7.5)
    morning, lunch, peak = mean_at(MONDAY, 10.5), mean_at(MONDAY, 12.5), mean_at(MONDAY, 14)
    evening = mean_at(MONDAY, 22)
    assert night < 0.35 * peak and evening < 0.4 * peak
    assert early < morning  # ramp from 08:00
    assert lunch < morning and lunch < peak  # lunch dip
    assert peak == max(mean_at(MONDAY, h) for h in (9, 10, 11, 12, 13, 14, 15, 16, 17, 18))
    assert mean_at(SATURDAY, 14) < 0.4 * peak  # weekend


def test_compressors_make_each_demand_period_different():
    profile = ph.LoadProfile(seed=4, peak_kw=80.0, compressor_kw=15.0)
    slot0 = MONDAY + 14 * HOUR
    demands = []
    for k in range(8):
        start = slot0 + k * ph.DEMAND_PERIOD
        duty = ph.compressor_duty(start, profile)
        assert 0 <= duty <= 1
        on_until = start + duty * ph.DEMAND_PERIOD
        if 0 < duty < 1:  # compressors run first, then stop, within the period
            assert ph.load_kw(on_until - 45, profile) - ph.load_kw(on_until + 45, profile) > 10
        samples = [ph.load_kw(start + s * 10, profile) for s in range(180)]
        demands.append(statistics.fmean(samples))
    assert max(demands) - min(demands) > 2.0  # kW of 30-minute demand


def test_energy_integrates_power_and_caching_changes_nothing():
    profile = ph.LoadProfile(seed=9)
    t0 = MONDAY
    counter = ph.EnergyCounter(profile, t0)
    previous = 0.0
    for minutes in (0.5, 7, 61, 60 * 9 + 13, 60 * 30, 60 * 24 * 3 + 1):
        t = t0 + minutes * 60
        value = counter.at(t)
        assert value >= previous  # never runs backwards
        assert value == pytest.approx(ph.energy_kwh(t, profile, t0), rel=1e-12)
        previous = value
    # over one hour: energy = mean power x 1 h
    a, b = t0 + 10 * HOUR, t0 + 11 * HOUR
    mean_kw = statistics.fmean(ph.load_kw(a + s, profile) for s in range(0, 3600, 5))
    assert counter.at(b) - counter.at(a) == pytest.approx(mean_kw, rel=0.02)
    # going back in time recomputes rather than returning a stale sum
    assert counter.at(t0 + HOUR) == pytest.approx(ph.energy_kwh(t0 + HOUR, profile, t0), rel=1e-12)
    assert counter.at(t0 - 10) == 0.0


def test_leakage_rises_with_humidity():
    ins = ph.Insulation(seed=3, installed=MONDAY, degradation=0.0)
    t = MONDAY + 5 * HOUR
    dry, threshold, wet = (ph.ior_ma(t, ins, rh) for rh in (40.0, 60.0, 95.0))
    assert dry == threshold
    assert wet - dry == pytest.approx(ins.humidity_gain * 35 / 40, rel=1e-9)


@pytest.mark.parametrize("rate", [0.0, 0.3, 2.0])
def test_leakage_degrades_at_the_configured_rate(rate):
    ins = ph.Insulation(seed=8, installed=MONDAY, degradation=rate)

    def week_mean(week: int) -> float:
        start = MONDAY + week * ph.WEEK
        return statistics.fmean(ph.ior_ma(start + i * 600, ins, 50.0) for i in range(1008))

    first, tenth = week_mean(0), week_mean(9)
    assert tenth - first == pytest.approx(9 * rate, abs=0.1)


def test_same_seed_same_values_other_seed_other_values():
    a, b, c = ph.Climate(seed=1), ph.Climate(seed=1), ph.Climate(seed=2)
    times = [MONDAY + i * 977.0 for i in range(200)]
    assert [ph.temperature_c(t, a) for t in times] == [ph.temperature_c(t, b) for t in times]
    assert [ph.temperature_c(t, a) for t in times] != [ph.temperature_c(t, c) for t in times]
    la, lb = ph.LoadProfile(seed=1), ph.LoadProfile(seed=1)
    assert [ph.load_kw(t, la) for t in times] == [ph.load_kw(t, lb) for t in times]


def test_noise_is_smooth_and_bounded():
    values = [ph.noise(7, "k", i * 1.0, 60.0) for i in range(3600)]
    assert all(-1 <= v <= 1 for v in values)
    assert max(abs(x - y) for x, y in itertools.pairwise(values)) < 0.1
    assert len({round(v, 6) for v in values}) > 1000


def test_contacts_follow_their_schedules():
    contacts = ph.Contacts(seed=6)
    cool = 20.0
    weekday_10 = ph.contact_states(MONDAY + 10 * HOUR + 5 * 60, contacts, cool)
    sunday_10 = ph.contact_states(MONDAY - DAY + 10 * HOUR + 5 * 60, contacts, cool)
    night = ph.contact_states(MONDAY + 2 * HOUR, contacts, cool)
    assert weekday_10[1] == 1 and sunday_10[1] == 0  # air-handling unit
    assert weekday_10[2] == 1 and night[2] == 0  # lighting
    assert weekday_10[6] == 1 and sunday_10[6] == 0  # generator test, Mondays 10:00-10:10
    assert ph.contact_states(MONDAY + 10.5 * HOUR, contacts, cool)[6] == 0
    assert night[4] == 1  # door closed at night
    assert night[5] == 0 and night[7] == 0  # fault contacts open
    assert ph.contact_states(MONDAY, contacts, 36.0)[3] == 1  # over-temperature
    assert ph.contact_states(MONDAY, contacts, 30.0)[3] == 0
    pump = [ph.contact_states(MONDAY + m * 60, contacts, cool)[0] for m in range(120)]
    assert sum(pump) == 40  # 10 minutes in every 30
    door = [
        ph.contact_states(MONDAY + d * DAY + 8 * HOUR + m * 60, contacts, cool)[4]
        for d in range(5)
        for m in range(600)
    ]
    assert 0 < door.count(0) < 300  # the door opens now and then on workdays
