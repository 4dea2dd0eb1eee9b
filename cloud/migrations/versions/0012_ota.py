"""Over-the-air updates

``ota_bundles`` and ``ota_bundle_files``: signed firmware bundles as
uploaded; ``ota_rollouts``: a bundle offered to terminals in waves;
``ota_targets``: each terminal's progress (its id is the job id on the
wire). docs/ota.md.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _user_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=op.f(f"fk_{table}_{column}_users"), ondelete="SET NULL"
    )


def upgrade() -> None:
    op.create_table(
        "ota_bundles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("mpy_version", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("signed_by", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=254), nullable=False),
        sa.Column("uploaded_by_user_id", sa.Integer(), nullable=True),
        _user_fk("ota_bundles", "uploaded_by_user_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_bundles")),
        sa.UniqueConstraint("bundle_id", name=op.f("uq_ota_bundles_bundle_id")),
    )
    op.create_table(
        "ota_bundle_files",
        sa.Column("bundle_pk", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_pk"],
            ["ota_bundles.id"],
            name=op.f("fk_ota_bundle_files_bundle_pk_ota_bundles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("bundle_pk", "path", name=op.f("pk_ota_bundle_files")),
    )
    op.create_table(
        "ota_rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("bundle_pk", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("threshold_pct", sa.Integer(), nullable=False),
        sa.Column("confirm_s", sa.Integer(), nullable=False),
        sa.Column("stall_s", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["bundle_pk"], ["ota_bundles.id"], name=op.f("fk_ota_rollouts_bundle_pk_ota_bundles")
        ),
        _user_fk("ota_rollouts", "created_by_user_id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_rollouts")),
    )
    op.create_index(op.f("ix_ota_rollouts_bundle_pk"), "ota_rollouts", ["bundle_pk"])
    op.create_table(
        "ota_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("command_id", sa.Integer(), nullable=True),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["ota_rollouts.id"],
            name=op.f("fk_ota_targets_rollout_id_ota_rollouts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_ota_targets_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_targets")),
        sa.UniqueConstraint(
            "rollout_id", "terminal_id", name=op.f("uq_ota_targets_rollout_id_terminal_id")
        ),
    )
    op.create_index(op.f("ix_ota_targets_rollout_id"), "ota_targets", ["rollout_id"])
    op.create_index(op.f("ix_ota_targets_terminal_id"), "ota_targets", ["terminal_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_ota_targets_terminal_id"), table_name="ota_targets")
    op.drop_index(op.f("ix_ota_targets_rollout_id"), table_name="ota_targets")
    op.drop_table("ota_targets")
    op.drop_index(op.f("ix_ota_rollouts_bundle_pk"), table_name="ota_rollouts")
    op.drop_table("ota_rollouts")
    op.drop_table("ota_bundle_files")
    op.drop_table("ota_bundles")
