"""Parked frames

``parked_frames``: uplink frames of known terminals kept for later instead
of being refused (outside the contract, birth not known yet); the ingest
applies them once released.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "parked_frames",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("release_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_requested_by", sa.String(length=254), nullable=True),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_parked_frames_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parked_frames")),
        sa.UniqueConstraint(
            "terminal_id", "boot", "seq", name=op.f("uq_parked_frames_terminal_id_boot_seq")
        ),
    )
    op.create_index(
        op.f("ix_parked_frames_terminal_id"), "parked_frames", ["terminal_id"], unique=False
    )
    op.create_index(
        "ix_parked_frames_release_requested_at",
        "parked_frames",
        ["release_requested_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_parked_frames_release_requested_at", table_name="parked_frames")
    op.drop_index(op.f("ix_parked_frames_terminal_id"), table_name="parked_frames")
    op.drop_table("parked_frames")
