"""Figures of health checks

``health_checks.figures``: numbers a check read on the way, such as the
broker's connected clients (``{"clients_connected": 42}``), for the
operations console and ``/metrics``.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("health_checks") as batch:
        batch.add_column(sa.Column("figures", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("health_checks") as batch:
        batch.drop_column("figures")
