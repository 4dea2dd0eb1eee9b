"""Reads and locks the alarm engine shares: open alarms, configured rules,
and the per-terminal lock that serialises alarm work.

A caller that handles many frames of the same terminals in one transaction
(the ingest worker) locks those terminals itself and calls :func:`preload`:
given the :class:`OpenAlarms` it returns, :func:`lock_terminal` and
:func:`open_alarm` answer those terminals from memory instead of one
statement each, which was most of the cost of a heartbeat. Every other
caller (sweep, web) passes none and queries.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Alarm, AlarmCondition, AlarmState, Terminal, lock_terminals

OFFLINE, CLOCK, STALE, DEMAND = "offline", "clock", "stale", "demand"
# Conditions with one level only: their alarm-level clear ends the alarm.
SINGLE_LEVEL = frozenset({OFFLINE, CLOCK, STALE, "unreach", "unreachable"})

_Key = tuple[str | None, str]  # (channel, cond)


class OpenAlarms:
    """The open alarms of terminals whose rows the caller holds locked
    (:func:`preload`), by terminal and (channel, cond).

    While the locks are held nobody else can change these terminals' alarms,
    and the engine records every alarm it opens here (:meth:`add`), so the
    map stays exact. Valid until the transaction ends (commit or rollback),
    when the locks end too: make a new one for each transaction.
    """

    def __init__(self, index: dict[str, dict[_Key, Alarm]]) -> None:
        self._index = index

    def holds(self, terminal_id: str) -> bool:
        """True when ``terminal_id`` was preloaded (its row is locked)."""
        return terminal_id in self._index

    def get(self, terminal_id: str, channel: str | None, cond: str) -> Alarm | None:
        alarm = self._index[terminal_id].get((channel, cond))
        return alarm if alarm is not None and alarm.state != AlarmState.CLEARED else None

    def add(self, alarm: Alarm) -> None:
        """Record a newly opened alarm (of a preloaded terminal; others are ignored)."""
        alarms = self._index.get(alarm.terminal_id)
        if alarms is not None:
            alarms[(alarm.channel, alarm.cond)] = alarm


def preload(session: Session, terminal_ids: list[str]) -> OpenAlarms:
    """Load the open alarms of ``terminal_ids`` for the rest of the transaction.

    Contract: the caller already holds these terminals' locks until the
    transaction ends (:func:`cloud.models.lock_terminals`) and passes the
    result to every engine call of this transaction for these terminals.
    """
    index: dict[str, dict[_Key, Alarm]] = {t: {} for t in terminal_ids}
    if terminal_ids:
        rows = session.scalars(
            sa.select(Alarm).where(
                Alarm.terminal_id.in_(terminal_ids), Alarm.state != AlarmState.CLEARED
            )
        )
        for alarm in rows:
            index[alarm.terminal_id][(alarm.channel, alarm.cond)] = alarm
    return OpenAlarms(index)


def lock_terminal(
    session: Session, terminal: Terminal, preloaded: OpenAlarms | None = None
) -> None:
    """Serialise alarm work on one terminal until the transaction ends
    (nothing to do when ``preloaded`` holds it: the caller has the lock)."""
    if preloaded is not None and preloaded.holds(terminal.id):
        return
    lock_terminals(session, [terminal.id])


def open_alarm(
    session: Session,
    terminal_id: str,
    channel: str | None,
    cond: str,
    preloaded: OpenAlarms | None = None,
) -> Alarm | None:
    """The open (not cleared) alarm of ``cond`` on the terminal or channel."""
    if preloaded is not None and preloaded.holds(terminal_id):
        return preloaded.get(terminal_id, channel, cond)
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
