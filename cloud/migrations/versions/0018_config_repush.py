"""Config re-push bookkeeping

``terminals.config_repushes`` (times the pending config was published again
because the terminal had not acknowledged it within the deadline) and
``terminals.config_repushed_at`` (the last time). Both restart with each new
config (:meth:`cloud.models.Terminal.push_config`).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(
            sa.Column("config_repushes", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("config_repushed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("config_repushed_at")
        batch.drop_column("config_repushes")
