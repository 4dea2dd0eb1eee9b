"""Signing secrets for notification targets

``notification_targets.hmac_secret``: alarm webhooks are signed like
forwarding (HMAC-SHA256 over timestamp and body). Existing targets get a
fresh random secret; their owners see it by making a new one on the site.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 11:30:00
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification_targets") as batch:
        batch.add_column(sa.Column("hmac_secret", sa.String(length=128), nullable=True))
    conn = op.get_bind()
    targets = sa.table("notification_targets", sa.column("id"), sa.column("hmac_secret"))
    for (target_id,) in conn.execute(sa.select(targets.c.id)).all():
        conn.execute(
            targets.update()
            .where(targets.c.id == target_id)
            .values(hmac_secret=secrets.token_urlsafe(32))
        )
    with op.batch_alter_table("notification_targets") as batch:
        batch.alter_column("hmac_secret", existing_type=sa.String(length=128), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("notification_targets") as batch:
        batch.drop_column("hmac_secret")
