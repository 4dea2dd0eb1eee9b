"""Tunables of the alarm engine, with defaults in code.

Per-terminal values override some of them through ``AlarmCondition`` rows
(see :mod:`cloud.alarms.conditions`); these are the fallbacks.
Invalid values raise :class:`cloud.errors.ConfigError` at construction.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from cloud.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AlarmPolicy:
    # Reminders for raised, unacknowledged alarms; 0 disables them.
    reminder_interval_s: int = 3600
    # Stop after this many reminders; None: until someone acknowledges.
    max_reminders: int | None = None
    # Offline after this long without any frame (3 missed 5-minute heartbeats).
    offline_after_s: int = 900
    # A "stale" condition without its own on_delay_s uses this window.
    stale_after_s: int = 3600
    # Historical alarms are collected per recipient for this long, then mailed.
    digest_window_s: int = 900
    # No demand prediction in the first seconds of a period (too little data).
    demand_min_elapsed_s: int = 120
    # Notify recipients when someone acknowledges (a state change like any other).
    notify_acknowledge: bool = True

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"alarm policy: {field.name} = {value} is negative")
        for name in ("offline_after_s", "stale_after_s", "digest_window_s"):
            if getattr(self, name) < 60:
                raise ConfigError(f"alarm policy: {name} must be at least 60 s")

    @property
    def reminder_interval(self) -> timedelta | None:
        return timedelta(seconds=self.reminder_interval_s) if self.reminder_interval_s else None

    @property
    def digest_window(self) -> timedelta:
        return timedelta(seconds=self.digest_window_s)


DEFAULT_POLICY = AlarmPolicy()
