"""Slots of the schedule kinds: which period a run at a given time is for."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from cloud.errors import InvalidValue
from cloud.ops.schedule import DailyAt, Every, MonthlyAt, next_month, previous_month

JST = ZoneInfo("Asia/Tokyo")


def test_every_slots_are_aligned_to_the_epoch():
    every = Every(60)
    end_of_minute = datetime(2026, 3, 1, 0, 0, 59, 999, tzinfo=UTC)
    assert every.slot(end_of_minute, JST) == "2026-03-01T00:00:00Z"
    assert every.slot(datetime(2026, 3, 1, 0, 1, tzinfo=UTC), JST) == "2026-03-01T00:01:00Z"
    assert Every(1).slot(datetime(2026, 3, 1, 0, 0, 7, tzinfo=UTC), JST) == "2026-03-01T00:00:07Z"
    with pytest.raises(InvalidValue):
        Every(0)


def test_daily_slot_is_the_local_date_of_the_last_due_run():
    daily = DailyAt(3, 0)
    # 03:00 JST is 18:00 UTC of the day before.
    assert daily.slot(datetime(2026, 3, 14, 17, 59, tzinfo=UTC), JST) == "2026-03-14"
    assert daily.slot(datetime(2026, 3, 14, 18, 0, tzinfo=UTC), JST) == "2026-03-15"
    # A run delayed to 02:00 the next day still fills the day it was for.
    assert daily.slot(datetime(2026, 3, 16, 2, 0, tzinfo=JST), JST) == "2026-03-15"


def test_monthly_slot_is_the_month_of_the_last_due_run():
    monthly = MonthlyAt(1, 6, 0)
    assert monthly.slot(datetime(2026, 4, 1, 5, 59, tzinfo=JST), JST) == "2026-03"
    assert monthly.slot(datetime(2026, 4, 1, 6, 0, tzinfo=JST), JST) == "2026-04"
    assert monthly.slot(datetime(2026, 1, 1, 0, 0, tzinfo=JST), JST) == "2025-12"
    with pytest.raises(InvalidValue):
        MonthlyAt(31)


def test_triggers_fire_at_the_local_time():
    trigger = DailyAt(3, 30).trigger(JST)
    now = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    assert trigger.get_next_fire_time(None, now) == datetime(2026, 3, 14, 18, 30, tzinfo=UTC)
    every = Every(60).trigger(JST)
    assert every.get_next_fire_time(None, now).astimezone(UTC).second == 0


def test_month_steps():
    assert previous_month(date(2026, 1, 31)) == date(2025, 12, 1)
    assert next_month(date(2026, 12, 15)) == date(2027, 1, 1)
    assert next_month(date(2026, 1, 31)) == date(2026, 2, 1)
