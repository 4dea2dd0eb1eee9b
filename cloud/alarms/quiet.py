"""Quiet times: whether a maintenance window mutes an alarm event.

An alarm raised or escalated while a :class:`~cloud.models.MaintenanceWindow`
covers its terminal and channel is recorded with ``muted`` set and pages
nobody. What happens to it afterwards:

- it clears, de-escalates or is acknowledged: only the recipients who were
  told of it hear of that (usually nobody, so nobody gets a recovery mail
  for an alarm they never saw);
- it is still raised when the window has ended: its next reminder goes out
  as usual, to everyone; that is the first page about it, so an alarm that
  outlives the maintenance is not lost;
- it escalates after the window: paged as any escalation.

The event's own time decides (``at``): late data about an alarm that
happened during the maintenance is muted too.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import MaintenanceWindow, Terminal, as_utc


def windows_at(session: Session, terminal: Terminal, at: datetime) -> list[MaintenanceWindow]:
    """The windows in force at ``at`` for ``terminal``'s customer (any channel)."""
    at = as_utc(at)
    W = MaintenanceWindow
    return list(
        session.scalars(
            sa.select(W).where(
                W.starts_at <= at,
                W.ends_at > at,
                sa.or_(W.customer_id.is_(None), W.customer_id == terminal.customer_id),
                sa.or_(W.terminal_id.is_(None), W.terminal_id == terminal.id),
            )
        )
    )


def muted(session: Session, terminal: Terminal, channel: str | None, at: datetime) -> bool:
    """True if an alarm event on ``channel`` (None: the terminal itself) of
    ``terminal`` at ``at`` falls in a maintenance window."""
    at = as_utc(at)
    return any(w.covers(terminal.id, channel, at) for w in windows_at(session, terminal, at))
