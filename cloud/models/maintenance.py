"""Maintenance windows: periods in which a terminal's alarms page nobody."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow
from cloud.models.ops import Announcement


class MaintenanceWindow(Base):
    """While ``starts_at <= t < ends_at``, alarms of the terminals it covers
    are recorded and shown as muted, and no notification goes out for them.

    Scope narrows with each non-empty field: ``customer_id`` None covers every
    customer (only an operator's maintenance announcement makes such a
    window), ``terminal_id`` None every terminal of the customer, and an
    empty ``channels`` list the whole terminal (its own conditions such as
    ``offline`` included); a non-empty list only those channels (by name).
    """

    __tablename__ = "maintenance_windows"
    __table_args__ = (
        sa.CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        sa.Index("ix_maintenance_windows_ends_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    terminal_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE")
    )
    channels: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(sa.String(200), default="")
    # The service maintenance announcement that carries this window, if any.
    announcement_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("announcements.id", ondelete="CASCADE")
    )
    created_by_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def covers(self, terminal_id: str, channel: str | None, at: datetime) -> bool:
        """True if an alarm on ``channel`` (None: the terminal itself) of
        ``terminal_id`` at ``at`` is muted by this window (customer not checked)."""
        if not self.starts_at <= at < self.ends_at:
            return False
        if self.terminal_id is not None and self.terminal_id != terminal_id:
            return False
        return not self.channels or (channel is not None and channel in self.channels)


def windows_for(announcement: Announcement) -> list[MaintenanceWindow]:
    """The windows that mute alarms during ``announcement``: one per customer
    it lists, or one for every customer (not added to any session)."""
    ids: list[int | None] = (
        [None] if announcement.customer_ids is None else list(announcement.customer_ids)
    )
    return [
        MaintenanceWindow(
            customer_id=customer_id,
            channels=[],
            starts_at=announcement.starts_at,
            ends_at=announcement.ends_at,
            reason=announcement.title[:200],
            announcement_id=announcement.id,
        )
        for customer_id in ids
    ]
