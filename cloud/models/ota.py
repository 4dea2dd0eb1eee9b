"""Over-the-air updates: uploaded bundles, rollouts, and each terminal's progress.

docs/ota.md is the operator's view; :mod:`cloud.services.ota` the logic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base
from protocol.limits import MAX_STR, MAX_TEXT, MAX_TID

# Rollout states
RUNNING = "running"
PAUSED = "paused"
DONE = "done"
CANCELLED = "cancelled"
ROLLOUT_STATES = (RUNNING, PAUSED, DONE, CANCELLED)

# Target states: the terminal's (protocol.ota.STATES) plus the cloud's own
PENDING = "pending"  # in a later wave
OFFERED = "offered"  # the ota command went out


class OtaBundle(Base):
    """A signed bundle as uploaded (its files in :class:`OtaBundleFile`)."""

    __tablename__ = "ota_bundles"

    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    version: Mapped[str] = mapped_column(sa.String(MAX_STR))
    mpy_version: Mapped[str] = mapped_column(sa.String(16))
    size: Mapped[int]  # bytes a terminal fetches: every file but main.py, manifest and signature
    files: Mapped[int]  # how many files a terminal fetches
    signed_by: Mapped[str] = mapped_column(sa.String(64))  # public key, hex
    uploaded_at: Mapped[datetime]
    uploaded_by: Mapped[str] = mapped_column(sa.String(254))
    uploaded_by_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )


class OtaBundleFile(Base):
    """One file of a bundle, served in chunks to terminals (manifest and signature too)."""

    __tablename__ = "ota_bundle_files"

    bundle_pk: Mapped[int] = mapped_column(
        sa.ForeignKey("ota_bundles.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(sa.String(MAX_STR), primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int]
    data: Mapped[bytes] = mapped_column(sa.LargeBinary)


class OtaRollout(Base):
    """One bundle offered to a set of terminals, wave after wave."""

    __tablename__ = "ota_rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    bundle_pk: Mapped[int] = mapped_column(sa.ForeignKey("ota_bundles.id"), index=True)
    state: Mapped[str] = mapped_column(sa.String(16), default=RUNNING)
    waves: Mapped[list[Any]] = mapped_column(sa.JSON)  # sizes as given, e.g. ["1", "10%", "100%"]
    wave: Mapped[int] = mapped_column(default=0)  # the wave being offered (0-based)
    threshold_pct: Mapped[int]  # a wave failing more than this pauses the rollout
    confirm_s: Mapped[int]  # the terminals' confirmation deadline
    stall_s: Mapped[int]  # an offered terminal silent this long counts as failed
    reason: Mapped[str] = mapped_column(sa.String(MAX_TEXT), default="")  # why paused
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(254))
    created_by_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime]


class OtaTarget(Base):
    """One terminal of a rollout. Its ``id`` is the ``job`` on the wire."""

    __tablename__ = "ota_targets"
    __table_args__ = (sa.UniqueConstraint("rollout_id", "terminal_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ota_rollouts.id", ondelete="CASCADE"), index=True
    )
    terminal_id: Mapped[str] = mapped_column(
        sa.String(MAX_TID), sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    wave: Mapped[int]
    state: Mapped[str] = mapped_column(sa.String(16), default=PENDING)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str] = mapped_column(sa.String(MAX_TEXT), default="")
    command_id: Mapped[int | None]
    offered_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]  # the terminal's last report (or the offer)

    @property
    def percent(self) -> int:
        return self.done * 100 // self.total if self.total else 0
