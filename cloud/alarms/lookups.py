"""Reads and locks the alarm engine shares: open alarms, configured rules,
and the per-terminal lock that serialises alarm work.

A caller that handles many frames of the same terminals in one transaction
(the ingest worker) locks those terminals itself and calls :func:`preload`:
then :func:`lock_terminal` and :func:`open_alarm` answer those terminals from
memory instead of one statement each, which was most of the cost of a
heartbeat. The preload lives in ``session.info``, so it ends with the
session; every other caller (sweep, web) keeps querying.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session, SessionTransaction

from cloud.models import Alarm, AlarmCondition, AlarmState, Terminal

OFFLINE, CLOCK, STALE, DEMAND = "offline", "clock", "stale", "demand"
# Conditions with one level only: their alarm-level clear ends the alarm.
SINGLE_LEVEL = frozenset({OFFLINE, CLOCK, STALE, "unreach", "unreachable"})

# session.info keys of a preload: terminal id -> {(channel, cond): open Alarm}
_OPEN = "mimamori.alarms.open"
_LISTENING = "mimamori.alarms.listening"


def preload(session: Session, terminal_ids: list[str]) -> None:
    """Load the open alarms of ``terminal_ids`` for the rest of the session.

    Contract: the caller already holds these terminals' locks until the
    transaction ends (PostgreSQL ``SELECT ... FOR UPDATE`` on their rows, in
    id order; SQLite: the transaction has written, so it holds the database's
    write lock). Nobody else can then change their alarms, and every change
    made in this session goes through :func:`remember`, so the map stays
    exact. The preload ends with the transaction (commit or rollback): the
    locks end there too.
    """
    if not session.info.get(_LISTENING):
        sa.event.listen(session, "after_transaction_end", _forget_preload)
        session.info[_LISTENING] = True
    index: dict[str, dict[tuple[str | None, str], Alarm]] = {t: {} for t in terminal_ids}
    if terminal_ids:
        rows = session.scalars(
            sa.select(Alarm).where(
                Alarm.terminal_id.in_(terminal_ids), Alarm.state != AlarmState.CLEARED
            )
        )
        for alarm in rows:
            index[alarm.terminal_id][(alarm.channel, alarm.cond)] = alarm
    session.info.setdefault(_OPEN, {}).update(index)


def _forget_preload(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction, not a savepoint
        session.info.pop(_OPEN, None)


def remember(session: Session, alarm: Alarm) -> None:
    """Record a newly added open alarm in the session's preload, if any."""
    index = session.info.get(_OPEN)
    if index is not None and alarm.terminal_id in index:
        index[alarm.terminal_id][(alarm.channel, alarm.cond)] = alarm


def lock_terminal(session: Session, terminal: Terminal) -> None:
    """Serialise alarm work on one terminal until the transaction ends."""
    index = session.info.get(_OPEN)
    if index is not None and terminal.id in index:
        return  # preloaded: the caller holds the lock (see preload)
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
    index = session.info.get(_OPEN)
    if index is not None and terminal_id in index:
        alarm = index[terminal_id].get((channel, cond))
        return alarm if alarm is not None and alarm.state != AlarmState.CLEARED else None
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
