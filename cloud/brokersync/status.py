"""Suspend, resume and decommission terminals: plain service functions.

The broker account follows the row (:mod:`cloud.brokersync.reconciler`,
within seconds): suspended disables it and disconnects the terminal,
decommissioned deletes it; resuming enables it again. Data and settings
are kept in every state (retention deletes old data as for any terminal).

:func:`set_terminal_status` takes no viewer: the web and API call it after
their role check (operators), and the cloud's own rules call it too (for
example suspending every terminal of a customer that is deactivated), with
``actor`` naming who decided. It adds one audit entry in the caller's
transaction; the caller commits.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from cloud.errors import InvalidTransition, InvalidValue
from cloud.models import AuditEntry, Terminal, TerminalStatus


def set_terminal_status(
    session: Session,
    terminal_id: str,
    status: TerminalStatus | str,
    *,
    actor: str,
    at: datetime,
    reason: str = "",
    actor_user_id: int | None = None,
    ip: str | None = None,
) -> Terminal:
    """Move ``terminal_id`` to ``status``; return the terminal.

    Raises :class:`InvalidValue` for an unknown terminal or status and
    :class:`InvalidTransition` for leaving ``decommissioned`` (a terminal
    back in service is registered again under a new id or restored by an
    operator in the database, deliberately). Setting the current status
    again changes nothing and is not audited.
    """
    try:
        new = TerminalStatus(status)
    except ValueError as err:
        raise InvalidValue(f"unknown terminal status {status!r}") from err
    terminal = session.get(Terminal, terminal_id)
    if terminal is None:
        raise InvalidValue(f"unknown terminal {terminal_id!r}")
    old = terminal.status
    if old == new:
        return terminal
    if old == TerminalStatus.DECOMMISSIONED:
        raise InvalidTransition(f"terminal {terminal_id} is decommissioned")
    terminal.status = new
    session.add(
        AuditEntry(
            at=at,
            actor=actor[:254],
            actor_user_id=actor_user_id,
            customer_id=terminal.customer_id,
            action=f"terminal.status.{new.value}"[:64],
            object_type="terminal",
            object_id=terminal.id,
            details={"from": str(old), "to": str(new), "reason": reason[:500]},
            ip=ip,
        )
    )
    return terminal
