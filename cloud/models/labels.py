"""What people call a terminal's channels: display names, contact state names, key flags."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.models.base import Base, utcnow
from protocol.limits import MAX_STR

MAX_LABEL = 100  # characters of a display name
MAX_STATE = 32  # characters of a contact state name


class ChannelLabel(Base):
    """The customer's words for one channel of one terminal.

    Keyed by the channel's *name*, not its row: a birth that redeclares the
    channels retires the :class:`~cloud.models.Channel` rows, and the labels
    must survive that. An empty text means "no label": readers fall back to
    the channel name, and to ``0``/``1`` for a contact's states. ``key``
    marks the channels the fleet overview shows on the terminal's line.
    """

    __tablename__ = "channel_labels"

    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(sa.String(MAX_STR), primary_key=True)
    display_name: Mapped[str] = mapped_column(sa.String(MAX_LABEL), default="")
    state_off: Mapped[str] = mapped_column(sa.String(MAX_STATE), default="")  # value 0
    state_on: Mapped[str] = mapped_column(sa.String(MAX_STATE), default="")  # value 1
    key: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
