"""SFTP file forwarding

``forwarding_endpoints``: ``kind`` (webhook or sftp) and, for SFTP, the
pinned host key, the endpoint's own SSH key, the file period, scope and time
zone, and how far files have been queued.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("host_key", sa.Text()),
    ("ssh_key", sa.Text()),
    ("file_period", sa.String(length=8)),
    ("file_scope", sa.String(length=16)),
    ("file_timezone", sa.String(length=64)),
    ("files_from", sa.DateTime(timezone=True)),
    ("files_until", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    with op.batch_alter_table("forwarding_endpoints") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="webhook", nullable=False)
        )
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM forwarding_endpoints WHERE kind = 'sftp'")
    with op.batch_alter_table("forwarding_endpoints") as batch:
        for name, _kind in reversed(_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("kind")
