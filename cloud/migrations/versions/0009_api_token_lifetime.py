"""API token lifetime

``users.api_token_created_at``, ``api_token_expires_at`` (tokens expire, 90
days by default) and ``api_token_last_used_at`` (shown on the token page).
Existing tokens get an expiry 90 days from the upgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 13:30:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("api_token_created_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("api_token_expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("api_token_last_used_at", sa.DateTime(timezone=True)))
    users = sa.table(
        "users",
        sa.column("api_token_hash", sa.String()),
        sa.column("api_token_expires_at", sa.DateTime(timezone=True)),
    )
    op.get_bind().execute(
        users.update()
        .where(users.c.api_token_hash.is_not(None))
        .values(api_token_expires_at=datetime.now(UTC) + timedelta(days=90))
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("api_token_last_used_at")
        batch.drop_column("api_token_expires_at")
        batch.drop_column("api_token_created_at")
