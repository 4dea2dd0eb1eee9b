"""The sensors a terminal's birth names

``terminals.devices``: each wired device's name, sensor-profile model and
the profile's status (documented, reference, test, site) as the newest
birth frame declared them; NULL for terminals whose firmware does not say.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.add_column(sa.Column("devices", sa.JSON(none_as_null=True)))


def downgrade() -> None:
    with op.batch_alter_table("terminals") as batch:
        batch.drop_column("devices")
