"""Every configuration the cloud sent to a terminal, by version.

The cloud config in force is the newest row of the terminal (what the
settings page starts from and the next edit builds on), and a pending one
can be published again from here. The audit log keeps the history of who
changed what, but retention prunes it; this table is never pruned while the
terminal exists (a few kilobytes per change).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow


class TerminalConfig(Base):
    """One version of a terminal's cloud config, as published (``document``)."""

    __tablename__ = "terminal_configs"

    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True
    )
    # u32 on the wire, hence BigInteger.
    version: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
