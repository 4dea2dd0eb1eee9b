"""Channel labels

``channel_labels``: the customer's display name of each channel, the names
of a contact's two states and whether the channel is one of the terminal's
key channels (shown on its line of the fleet overview). Keyed by terminal
and channel name, so labels survive a birth that redeclares the channels.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channel_labels",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("state_off", sa.String(length=32), nullable=False),
        sa.Column("state_on", sa.String(length=32), nullable=False),
        sa.Column("key", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_channel_labels_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "channel", name=op.f("pk_channel_labels")),
    )


def downgrade() -> None:
    op.drop_table("channel_labels")
