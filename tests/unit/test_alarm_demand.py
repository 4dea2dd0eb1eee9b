"""30-minute demand prediction: the pure arithmetic and the period boundaries."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.alarms.demand import PERIOD_S, over_contract, period_of, predict_kw
from cloud.errors import InvalidValue

JST = ZoneInfo("Asia/Tokyo")


def test_prediction_is_used_energy_plus_current_rate_over_the_rest_of_the_period():
    # 15 min into the period 20 kWh used, 100 kW now: 20 + 100 * 0.25 h = 45 kWh -> 90 kW.
    assert predict_kw(used_kwh=20.0, current_kw=100.0, elapsed_s=900) == pytest.approx(90.0)


def test_at_the_start_the_prediction_is_the_current_power():
    assert predict_kw(0.0, 123.4, 0) == pytest.approx(123.4)


def test_at_the_end_the_prediction_is_the_actual_average():
    # 60 kWh in half an hour is a demand of 120 kW whatever the power now.
    assert predict_kw(60.0, 999.0, PERIOD_S) == pytest.approx(120.0)


def test_a_worked_example_from_a_demand_monitor_manual():
    # Contract 300 kW. At 20 min, 110 kWh used, load now 280 kW:
    # 110 + 280 * 10/60 = 156.67 kWh -> 313.3 kW: over the contract, warn.
    predicted = predict_kw(110.0, 280.0, 20 * 60)
    assert predicted == pytest.approx(313.333, abs=1e-3)
    assert over_contract(predicted, 300.0)
    # Shedding 60 kW brings it under: 110 + 220 / 6 = 146.67 kWh -> 293.3 kW.
    assert not over_contract(predict_kw(110.0, 220.0, 20 * 60), 300.0)


def test_exactly_at_the_contract_is_not_over():
    assert not over_contract(300.0, 300.0)


@pytest.mark.parametrize(
    "args",
    [
        (-1.0, 10.0, 60),  # counter went backwards
        (1.0, 10.0, -1),
        (1.0, 10.0, PERIOD_S + 1),
        (math.nan, 10.0, 60),
        (1.0, math.inf, 60),
    ],
)
def test_impossible_inputs_are_refused(args):
    with pytest.raises(InvalidValue):
        predict_kw(*args)


def test_contract_must_be_positive():
    with pytest.raises(InvalidValue):
        over_contract(10.0, 0.0)


@given(
    used=st.floats(0, 10_000),
    kw=st.floats(0, 10_000),
    more=st.floats(0, 1_000),
    elapsed=st.integers(0, PERIOD_S - 1),
)
def test_more_power_now_never_lowers_the_prediction(used, kw, more, elapsed):
    assert predict_kw(used, kw + more, elapsed) >= predict_kw(used, kw, elapsed) - 1e-9


@given(kw=st.floats(0, 10_000), elapsed=st.integers(0, PERIOD_S))
def test_a_constant_load_predicts_itself(kw, elapsed):
    used = kw * elapsed / 3600  # what a constant load used so far
    assert predict_kw(used, kw, elapsed) == pytest.approx(kw, rel=1e-9, abs=1e-9)


def test_periods_are_aligned_to_00_and_30_jst():
    at = datetime(2026, 11, 27, 14, 47, 12, tzinfo=JST)
    start, end = period_of(at)
    assert (start, end) == (
        datetime(2026, 11, 27, 14, 30, tzinfo=JST),
        datetime(2026, 11, 27, 15, 0, tzinfo=JST),
    )


def test_a_period_boundary_starts_a_new_period():
    at = datetime(2026, 11, 27, 15, 0, tzinfo=JST)
    assert period_of(at)[0] == at
    assert period_of(at - timedelta(microseconds=1))[0] == datetime(
        2026, 11, 27, 14, 30, tzinfo=JST
    )


def test_periods_keep_the_zone_of_the_argument():
    start, _ = period_of(datetime(2026, 11, 27, 5, 47, tzinfo=UTC))
    assert start == datetime(2026, 11, 27, 5, 30, tzinfo=UTC) and start.tzinfo is UTC


def test_alignment_follows_local_time_in_half_hour_offset_zones():
    # India is UTC+5:30; Nepal is UTC+5:45 where :00/:30 local are :15/:45 UTC.
    kathmandu = ZoneInfo("Asia/Kathmandu")
    start, end = period_of(datetime(2026, 1, 1, 6, 20, tzinfo=UTC), kathmandu)
    assert start == datetime(2026, 1, 1, 6, 15, tzinfo=UTC)
    assert end - start == timedelta(minutes=30)


def test_naive_times_are_refused():
    with pytest.raises(InvalidValue):
        period_of(datetime(2026, 1, 1, 12, 0))
