"""Remote commands sent to terminals, and what became of each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud.models.base import Base
from protocol.limits import MAX_TID

# Stored states. "timed out" is stored by the scheduler's ``command_timeouts``
# job (:func:`time_out`, every minute); until it runs, queued or delivered
# past ``expires_at`` reads as timed out all the same (TerminalCommand.state_at).
QUEUED = "queued"  # row written, not yet taken by the broker
DELIVERED = "delivered"  # the broker took it (QoS 1 PUBACK) for the terminal
SUCCEEDED = "succeeded"  # the terminal answered ok
FAILED = "failed"  # the terminal answered not ok, or the broker refused it
TIMED_OUT = "timed_out"
COMMAND_STATES = (QUEUED, DELIVERED, SUCCEEDED, FAILED, TIMED_OUT)


class TerminalCommand(Base):
    """One command to one terminal. Its ``id`` is the command id on the wire
    (``cmd`` and ``cmdres`` frames, protocol/README.md); id 0 is the ingest's
    rebirth request for a terminal it has no row of; its other rebirth
    requests have rows, requested by ``system``)."""

    __tablename__ = "terminal_commands"

    id: Mapped[int] = mapped_column(primary_key=True)
    terminal_id: Mapped[str] = mapped_column(
        sa.String(MAX_TID), sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(32))
    args: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    state: Mapped[str] = mapped_column(sa.String(16), default=QUEUED)
    requested_at: Mapped[datetime]
    requested_by: Mapped[str] = mapped_column(sa.String(254))
    requested_by_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    answered_at: Mapped[datetime | None]
    ok: Mapped[bool | None]
    result: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    error: Mapped[str] = mapped_column(sa.String(500), default="")

    def state_at(self, now: datetime) -> str:
        """The state a person sees at ``now``: the stored one, or ``timed_out``
        for a command still unanswered after ``expires_at``."""
        if self.state in (QUEUED, DELIVERED) and now >= self.expires_at:
            return TIMED_OUT
        return self.state


def time_out(session: Session, now: datetime) -> int:
    """Store ``timed_out`` on every command still queued or delivered at its
    ``expires_at``; returns how many (the caller commits). A later answer
    still replaces the state (cloud.services.commands.record_result)."""
    result = session.execute(
        sa.update(TerminalCommand)
        .where(TerminalCommand.state.in_((QUEUED, DELIVERED)), TerminalCommand.expires_at <= now)
        .values(state=TIMED_OUT)
        .returning(TerminalCommand.id)
        .execution_options(synchronize_session=False)
    )
    return len(result.all())
