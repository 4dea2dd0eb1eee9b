"""When jobs run, and which *slot* a run belongs to.

A slot names the period a run is for: the minute of a health check, the day
of a backup, the month of the invoices. The scheduler claims ``(job, slot)``
once in ``job_runs`` before running, so a slot runs at most once across all
scheduler processes, and a run that starts late (after a restart, a misfire)
still fills the slot it was meant for rather than the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from cloud.errors import InvalidValue

if TYPE_CHECKING:
    from cloud.ops.context import Context


@dataclass(frozen=True)
class Every:
    """Every ``seconds`` seconds, aligned to the epoch (UTC)."""

    seconds: int

    def __post_init__(self) -> None:
        if self.seconds < 1:
            raise InvalidValue(f"interval {self.seconds} s")

    catch_up = False  # a missed health check cannot be taken afterwards

    def trigger(self, zone: ZoneInfo) -> BaseTrigger:
        start = datetime(2000, 1, 1, tzinfo=UTC)  # aligns fire times to multiples
        return IntervalTrigger(seconds=self.seconds, start_date=start, timezone=zone)

    def slot(self, now: datetime, zone: ZoneInfo) -> str:
        ts = int(now.timestamp()) // self.seconds * self.seconds
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DailyAt:
    """Every day at ``hour:minute`` local time; the slot is that local date."""

    hour: int
    minute: int = 0

    catch_up = True

    def trigger(self, zone: ZoneInfo) -> BaseTrigger:
        return CronTrigger(hour=self.hour, minute=self.minute, timezone=zone)

    def last_fire(self, now: datetime, zone: ZoneInfo) -> datetime:
        local = now.astimezone(zone)
        fire = local.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        return fire if fire <= local else fire - timedelta(days=1)

    def slot(self, now: datetime, zone: ZoneInfo) -> str:
        return self.last_fire(now, zone).date().isoformat()


@dataclass(frozen=True)
class MonthlyAt:
    """On day ``day`` of every month at ``hour:minute``; the slot is that
    month ("2026-03"). Jobs usually work on the month *before* the slot."""

    day: int = 1
    hour: int = 0
    minute: int = 0

    catch_up = True

    def __post_init__(self) -> None:
        if not 1 <= self.day <= 28:
            raise InvalidValue(f"day {self.day}: 1..28 so every month has it")

    def trigger(self, zone: ZoneInfo) -> BaseTrigger:
        return CronTrigger(day=self.day, hour=self.hour, minute=self.minute, timezone=zone)

    def slot(self, now: datetime, zone: ZoneInfo) -> str:
        local = now.astimezone(zone)
        fire = local.replace(
            day=self.day, hour=self.hour, minute=self.minute, second=0, microsecond=0
        )
        month = local.date().replace(day=1)
        if fire > local:
            month = previous_month(month)
        return month.strftime("%Y-%m")


def previous_month(month: date) -> date:
    """First day of the month before the one holding ``month``."""
    return (month.replace(day=1) - timedelta(days=1)).replace(day=1)


def next_month(month: date) -> date:
    """First day of the month after the one holding ``month``."""
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


Schedule = Every | DailyAt | MonthlyAt


@dataclass(frozen=True)
class Job:
    """A scheduled job: ``run`` does the work and returns a one-line summary;
    any exception it raises is recorded as the run's error."""

    name: str
    when: Schedule
    run: Callable[[Context], str]
