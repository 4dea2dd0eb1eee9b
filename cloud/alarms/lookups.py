"""Reads and locks the alarm engine shares: open alarms, configured rules,
and the per-terminal lock that serialises alarm work."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Alarm, AlarmCondition, AlarmState, Terminal

OFFLINE, CLOCK, STALE, DEMAND = "offline", "clock", "stale", "demand"
# Conditions with one level only: their alarm-level clear ends the alarm.
SINGLE_LEVEL = frozenset({OFFLINE, CLOCK, STALE, "unreach", "unreachable"})


def lock_terminal(session: Session, terminal: Terminal) -> None:
    """Serialise alarm work on one terminal until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(Terminal.id).where(Terminal.id == terminal.id).with_for_update())
    else:
        # SQLite has no row locks: a write takes the database's write lock
        # now, so nothing can commit between our reads and our writes.
        session.execute(
            sa.update(Terminal)
            .where(Terminal.id == terminal.id)
            .values(name=Terminal.name)
            .execution_options(synchronize_session=False)
        )


def open_alarm(session: Session, terminal_id: str, channel: str | None, cond: str) -> Alarm | None:
    """The open (not cleared) alarm of ``cond`` on the terminal or channel."""
    channel_match = Alarm.channel.is_(None) if channel is None else Alarm.channel == channel
    return session.scalars(
        sa.select(Alarm).where(
            Alarm.terminal_id == terminal_id,
            channel_match,
            Alarm.cond == cond,
            Alarm.state != AlarmState.CLEARED,
        )
    ).first()


def condition(
    session: Session, terminal_id: str, channel: str | None, cond: str
) -> AlarmCondition | None:
    """The terminal's configured rule for ``cond`` (None if there is none)."""
    channel_match = (
        AlarmCondition.channel.is_(None) if channel is None else AlarmCondition.channel == channel
    )
    return session.scalars(
        sa.select(AlarmCondition).where(
            AlarmCondition.terminal_id == terminal_id,
            channel_match,
            AlarmCondition.cond == cond,
        )
    ).first()


def has_warn_level(session: Session, terminal_id: str, channel: str | None, cond: str) -> bool:
    """True if the rule behind ``cond`` has a warning level under its alarm level."""
    if cond in SINGLE_LEVEL:
        return False
    rule = condition(session, terminal_id, channel, cond)
    return rule is not None and rule.warn is not None
