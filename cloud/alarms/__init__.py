"""The alarm engine: terminal alarm frames and cloud-side conditions become
alarm state machines, and every state change queues its notifications.

Entry points:

- :func:`on_frame` — the ingest worker, once per accepted frame, in the
  frame's transaction;
- :func:`sweep` — the scheduler, every minute (offline by missed
  heartbeats, stale values, 30-minute demand, reminders);
- :func:`acknowledge` / :func:`resolve_manually` — the web views.
"""

from cloud.alarms.conditions import SweepResult, sweep
from cloud.alarms.demand import period_of, predict_kw
from cloud.alarms.engine import acknowledge, on_frame, remind_due, resolve_manually
from cloud.alarms.policy import DEFAULT_POLICY, AlarmPolicy

__all__ = [
    "DEFAULT_POLICY",
    "AlarmPolicy",
    "SweepResult",
    "acknowledge",
    "on_frame",
    "period_of",
    "predict_kw",
    "remind_due",
    "resolve_manually",
    "sweep",
]
