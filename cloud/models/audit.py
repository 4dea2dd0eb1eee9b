"""Audit log: who did what to which object, from where and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow


class AuditEntry(Base):
    """One audited action. Append-only: nothing updates or deletes rows except
    the archive job that moves entries older than the online period.

    ``actor`` is a snapshot ("alice@example.com", "system", "terminal:T1") so
    the entry stays readable after the user is deleted; ``customer_id`` lets a
    customer see the entries about their own objects.
    """

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    actor: Mapped[str] = mapped_column(sa.String(254))
    customer_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="SET NULL"), index=True
    )
    action: Mapped[str] = mapped_column(sa.String(64))  # e.g. "terminal.config.push"
    object_type: Mapped[str] = mapped_column(sa.String(32))
    object_id: Mapped[str] = mapped_column(sa.String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
    ip: Mapped[str | None] = mapped_column(sa.String(45))  # IPv6 text is at most 45 chars
