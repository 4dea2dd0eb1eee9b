"""Remote commands sent to terminals, and what became of each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base
from protocol.limits import MAX_TID

# Stored states. "timed out" is not stored: it is what queued or delivered
# means once ``expires_at`` has passed (see TerminalCommand.state_at).
QUEUED = "queued"  # row written, not yet taken by the broker
DELIVERED = "delivered"  # the broker took it (QoS 1 PUBACK) for the terminal
SUCCEEDED = "succeeded"  # the terminal answered ok
FAILED = "failed"  # the terminal answered not ok, or the broker refused it
TIMED_OUT = "timed_out"
COMMAND_STATES = (QUEUED, DELIVERED, SUCCEEDED, FAILED, TIMED_OUT)


class TerminalCommand(Base):
    """One command to one terminal. Its ``id`` is the command id on the wire
    (``cmd`` and ``cmdres`` frames, protocol/README.md); id 0 is the ingest's
    own rebirth request, which has no row."""

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
