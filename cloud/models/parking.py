"""Parked frames: uplink frames the cloud keeps but cannot apply yet.

A frame from a known terminal that is refused for a reason that is not its
own fault (outside the contract, its birth not yet known, more than a
terminal may hold in memory) is written here, in the ingest's batch
transaction, before the terminal is told to delete it. Nothing here is
applied to the time series or the alarms until the frame is *released*
and goes through the ingest again (:mod:`cloud.services.parking`).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow
from protocol.limits import MAX_TID


class ParkedFrame(Base):
    """One parked uplink frame, exactly as the terminal published it.

    ``(terminal_id, boot, seq)`` is unique: a resend of a parked frame
    (its ack was lost) updates the row instead of adding one.
    ``received_at`` is when the broker delivered the frame first: a
    released frame is judged as of then (historical flag, counters' day).
    ``release_requested_at`` set means "apply it at the next chance"
    (an operator's release, or its birth arrived); the ingest deletes the
    row in the transaction that applies the frame.
    """

    __tablename__ = "parked_frames"
    __table_args__ = (
        sa.UniqueConstraint("terminal_id", "boot", "seq"),
        sa.Index("ix_parked_frames_release_requested_at", "release_requested_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    terminal_id: Mapped[str] = mapped_column(
        sa.String(MAX_TID), sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    boot: Mapped[int] = mapped_column(sa.BigInteger)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    topic: Mapped[str] = mapped_column(sa.String(200))
    payload: Mapped[bytes] = mapped_column(sa.LargeBinary)
    reason: Mapped[str] = mapped_column(sa.String(32))
    detail: Mapped[str] = mapped_column(sa.String(500), default="")
    received_at: Mapped[datetime]
    parked_at: Mapped[datetime] = mapped_column(default=utcnow)
    release_requested_at: Mapped[datetime | None]
    release_requested_by: Mapped[str | None] = mapped_column(sa.String(254))
