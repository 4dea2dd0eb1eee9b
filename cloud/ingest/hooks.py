"""The places where ingest hands frames to other parts of the cloud.

- ``on_frame(session, terminal, frame, received_at, historical, channels=...)``
  is :func:`cloud.alarms.engine.on_frame`, the alarm engine. Ingest calls it,
  in the batch's transaction, for every accepted birth, status, alarm and
  death frame, for any other frame whose ``unsynced`` flag is set, and for the
  newest live (not historical) data frame of each terminal in the batch.
  With an alarm frame come the channels of its boot as ingest resolved them
  for data (alias -> name, unit, exp; None when unknown), so the engine
  names the channel without a query.
  That last one says "online now, clock synchronised", so a terminal's
  ``offline`` and ``clock`` alarms clear with its first live data, not only
  with its next heartbeat; the other plain data frames (the bulk of the
  traffic) carry nothing more for it.
- ``prepare(session, terminal_ids)`` is :func:`cloud.alarms.lookups.preload`:
  called once per batch, after ingest has locked the batch's terminals and
  before the first ``on_frame``, with the terminals whose frames go to the
  engine; what it returns goes back to every ``on_frame`` of the batch as
  ``preloaded``, so the engine answers those terminals' open alarms from
  memory instead of several statements per heartbeat.
- ``enqueue_samples(session, terminal, points)`` is
  :func:`cloud.forwarding.enqueue_samples`: once per terminal and batch, the
  samples of that terminal's accepted data frames as ``(channel name, unit,
  ts, value)`` tuples, for the customers' own servers.

Both run inside the batch transaction: what they write commits or rolls back
with the samples' receipts, so a redelivered batch repeats them exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from cloud import forwarding as cloud_forwarding
from cloud.alarms import engine
from cloud.alarms.lookups import OpenAlarms
from cloud.models import Terminal


class OnFrame(Protocol):
    def __call__(
        self,
        session: Session,
        terminal: Terminal,
        frame: dict[str, Any],
        received_at: datetime,
        historical: bool,
        *,
        channels: Mapping[int, Any] | None = None,
        preloaded: OpenAlarms | None = None,
    ) -> None: ...


Prepare = Callable[[Session, list[str]], OpenAlarms]
ForwardSample = tuple[str, str, int, float]
EnqueueSamples = Callable[[Session, Terminal, Sequence[ForwardSample]], object]  # result unused


@dataclass(frozen=True)
class Hooks:
    """Collaborators of the ingest service; None switches one off."""

    on_frame: OnFrame | None = None
    prepare: Prepare | None = None
    enqueue_samples: EnqueueSamples | None = None


def default_hooks(alarms: bool = True, forwarding: bool = True) -> Hooks:
    """The production hooks: the alarm engine and data forwarding
    (``alarms``/``forwarding`` False switches one off)."""
    return Hooks(
        on_frame=engine.on_frame if alarms else None,
        prepare=engine.preload if alarms else None,
        enqueue_samples=cloud_forwarding.enqueue_samples if forwarding else None,
    )
