"""Terminal status and sealed broker credentials

``terminals.status`` (active, suspended, decommissioned) and
``terminals.credential_sealed`` (the MQTT password sealed to the broker
reconciler's key): the broker's accounts follow the terminal table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("credential_sealed", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column(
                "status",
                sa.Enum(
                    "active",
                    "suspended",
                    "decommissioned",
                    name="terminal_status",
                    native_enum=False,
                    create_constraint=True,
                    length=16,
                ),
                nullable=False,
                server_default="active",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_constraint("terminal_status", type_="check")
        batch.drop_column("status")
        batch.drop_column("credential_sealed")
