"""Remote commands: reboot, sample now, rebirth, resync clock.

:func:`send` writes a :class:`TerminalCommand` row (``queued``), audits it
(``terminal.cmd.send``), publishes a ``cmd`` frame whose id is the row's
id on ``mm/v1/<tid>/down/cmd`` (QoS 1, not retained) and records the
broker's PUBACK as ``delivered``. The terminal answers with ``cmdres``;
the ingest calls :func:`record_result` in its batch transaction
(``succeeded`` or ``failed``, with the terminal's result) next to the
``terminal.cmd.result`` audit entry. A command still unanswered after its
timeout is ``timed_out``: stored by the scheduler's ``command_timeouts``
job (:func:`cloud.models.commands.time_out`), read as such before it runs
(:meth:`TerminalCommand.state_at`); an answer that comes later is still
recorded. The ingest's own rebirth requests are rows too
(:func:`record_system_command`, requested by ``system``).

Who may send what (:data:`ALLOWED`), decided for the service's users:

- ``sample_now``, ``rebirth``, ``resync_clock`` answer a question and
  change nothing on site: operators, installers and the customer's
  administrators;
- ``reboot`` interrupts monitoring for the terminal's boot time:
  operators and installers only (a customer asks support);
- customer viewers send nothing; everyone who sees the terminal sees its
  commands and their state.

The OTA engineer reuses this path: add a name to :data:`ALLOWED` (and its
argument check to :func:`check_args`), the agent answers with ``cmdres``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Role, Terminal, TerminalCommand
from cloud.models.commands import DELIVERED, FAILED, QUEUED, SUCCEEDED
from cloud.services import audit
from cloud.services.errors import N_, Forbidden, Invalid, NotFound, PublishError
from cloud.services.publisher import Publisher
from cloud.services.scope import Viewer, get_scoped
from protocol import frames, topics
from protocol.errors import ProtocolError

STAFF_AND_ADMINS = (Role.OPERATOR, Role.INSTALLER, Role.CUSTOMER_ADMIN)
ALLOWED: dict[str, tuple[Role, ...]] = {
    "sample_now": STAFF_AND_ADMINS,
    "rebirth": STAFF_AND_ADMINS,
    "resync_clock": STAFF_AND_ADMINS,
    "reboot": (Role.OPERATOR, Role.INSTALLER),
}
NAMES = tuple(ALLOWED)
TIMEOUT_S = 300  # a terminal answers through its outbox: up to an upload period, plus the link
SEND_ACTION = "terminal.cmd.send"
SYSTEM_ACTION = "terminal.cmd.rebirth"  # the cloud's own commands (only rebirth so far)
SYSTEM_ACTOR = "system"
# The command id of a rebirth the ingest asks for without a row (a terminal
# unknown to the database); commands with a row carry its id (1 and up).
INGEST_REBIRTH_ID = 0


def may_send(viewer: Viewer) -> list[str]:
    """The command names ``viewer`` may send, in :data:`NAMES` order."""
    return [name for name in NAMES if viewer.role in ALLOWED[name]]


def check_args(name: str, args: Any) -> dict[str, Any]:
    """``args`` for command ``name``, checked; raises :class:`Invalid`.

    Only ``resync_clock`` takes an argument: ``time`` (Unix seconds) to set
    the terminal's clock from; without it the terminal asks its NTP server.
    """
    if name not in ALLOWED:
        raise Invalid(N_("Unknown command %(name)s."), name=name)
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise Invalid(N_("Command arguments must be an object."))
    if name == "resync_clock" and set(args) <= {"time"}:
        t = args.get("time")
        if t is None:
            return {}
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise Invalid(N_("time must be Unix seconds."))
        return {"time": t}
    if args:
        raise Invalid(N_("Command %(name)s takes no such arguments."), name=name)
    return {}


def send(
    session: Session,
    viewer: Viewer,
    terminal_id: str,
    name: str,
    args: Any = None,
    *,
    publisher: Publisher,
    now: datetime,
    ip: str | None,
    timeout_s: float = TIMEOUT_S,
) -> TerminalCommand:
    """Send command ``name`` to ``terminal_id``; return its row (committed).

    Raises NotFound (terminal not visible to ``viewer``), Forbidden (role),
    Invalid (name or arguments). A broker that does not take the command
    is not an exception: the row is ``failed`` with the reason in ``error``
    (the row and its audit entry stay: someone tried).
    """
    terminal = get_scoped(session, viewer, Terminal, terminal_id)
    checked = check_args(name, args)
    if viewer.role not in ALLOWED[name]:
        raise Forbidden(f"role {viewer.role} may not send {name}")
    command = TerminalCommand(
        terminal_id=terminal.id,
        name=name,
        args=checked,
        state=QUEUED,
        requested_at=now,
        requested_by=viewer.email[:254],
        requested_by_user_id=viewer.user_id,
        expires_at=now + timedelta(seconds=timeout_s),
        error="",
    )
    session.add(command)
    session.flush()  # the id is the command id on the wire
    audit.record(
        session,
        viewer,
        SEND_ACTION,
        "terminal",
        terminal.id,
        at=now,
        ip=ip,
        customer_id=terminal.customer_id,
        details={"id": command.id, "name": name, "args": checked},
    )
    session.commit()
    try:
        publisher.publish(
            topics.downlink(terminal.id, "cmd"),
            command_frame(terminal.id, command.id, name, checked, now),
            retain=False,
            qos=1,
        )
    except PublishError as err:
        values: dict[str, Any] = {
            "state": FAILED,
            "error": f"the broker did not take it: {err}"[:500],
        }
    else:
        values = {"state": DELIVERED, "delivered_at": now}
    # Only from queued: the terminal may have answered (through the ingest)
    # before the PUBACK reached us, and its answer must stay.
    session.execute(
        sa.update(TerminalCommand)
        .where(TerminalCommand.id == command.id, TerminalCommand.state == QUEUED)
        .values(**values)
    )
    session.commit()
    session.refresh(command)
    return command


def record_system_command(
    session: Session,
    terminal: Terminal,
    name: str,
    *,
    now: datetime,
    why: str,
    timeout_s: float = TIMEOUT_S,
) -> TerminalCommand:
    """Write the row (``queued``, requested by ``system``) and the audit entry
    ``terminal.cmd.rebirth`` of a command the cloud sends by itself; the
    caller commits, then publishes :func:`command_frame` with the row's id.
    For the ingest's rebirth request, inside its batch transaction: the row
    shows it in the terminal's command history, and the terminal's
    ``cmdres`` lands on it like any command's answer. The publisher (the
    ingest's receiver) has no database, so the row stays ``queued`` until
    the answer or the timeout."""
    command = TerminalCommand(
        terminal_id=terminal.id,
        name=name,
        args={},
        state=QUEUED,
        requested_at=now,
        requested_by=SYSTEM_ACTOR,
        requested_by_user_id=None,
        expires_at=now + timedelta(seconds=timeout_s),
        error="",
    )
    session.add(command)
    session.flush()  # the id is the command id on the wire
    audit.record(
        session,
        None,
        SYSTEM_ACTION,
        "terminal",
        terminal.id,
        at=now,
        ip=None,
        customer_id=terminal.customer_id,
        actor=SYSTEM_ACTOR,
        details={"id": command.id, "name": name, "why": why},
    )
    return command


def command_frame(
    terminal_id: str, command_id: int, name: str, args: dict[str, Any], now: datetime
) -> bytes:
    """The ``cmd`` frame (protocol/README.md): boot 0, seq = id, as the cloud's frames are."""
    try:
        return frames.encode(
            {
                "type": "cmd",
                "tid": terminal_id,
                "boot": 0,
                "seq": command_id,
                "ts": int(now.timestamp()),
                "unsynced": False,
                "id": command_id,
                "name": name,
                "args": args,
            }
        )
    except ProtocolError as err:  # ids beyond u32 after years of commands, a bug
        raise Invalid(N_("The command cannot be encoded: %(error)s"), error=str(err)) from err


def record_result(
    session: Session, terminal_id: str, command_id: int, *, ok: bool, result: Any, at: datetime
) -> TerminalCommand | None:
    """The terminal's ``cmdres`` for ``command_id``: ``succeeded``/``failed``
    with its result (also after the command timed out). Returns the row,
    or None when the id names no command of this terminal (a rebirth the
    ingest sent without a row, id 0, or a stale id). For the ingest, in its batch
    transaction; the caller commits."""
    command = session.get(TerminalCommand, command_id) if command_id > 0 else None
    if command is None or command.terminal_id != terminal_id:
        return None
    command.state = SUCCEEDED if ok else FAILED
    command.ok = bool(ok)
    command.result = result
    command.answered_at = at
    return command


def recent(
    session: Session, viewer: Viewer, terminal_id: str, limit: int = 20
) -> list[TerminalCommand]:
    """The terminal's newest commands first (anyone who sees the terminal)."""
    terminal = get_scoped(session, viewer, Terminal, terminal_id)
    return list(
        session.scalars(
            sa.select(TerminalCommand)
            .where(TerminalCommand.terminal_id == terminal.id)
            .order_by(TerminalCommand.id.desc())
            .limit(limit)
        )
    )


def get(session: Session, viewer: Viewer, terminal_id: str, command_id: int) -> TerminalCommand:
    """One command of the terminal; NotFound otherwise."""
    terminal = get_scoped(session, viewer, Terminal, terminal_id)
    command = session.get(TerminalCommand, command_id)
    if command is None or command.terminal_id != terminal.id:
        raise NotFound(f"command {command_id}")
    return command
