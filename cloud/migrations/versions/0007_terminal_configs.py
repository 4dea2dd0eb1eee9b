"""Terminal configs in their own table

``terminal_configs`` keeps every cloud config sent to a terminal, by
version. Until now the config in force was read from the audit log, which
retention prunes after three months; this revision copies every
``terminal.config.push`` entry still in the audit log into the new table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 12:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terminal_configs",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_terminal_configs_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "version", name=op.f("pk_terminal_configs")),
    )
    conn = op.get_bind()
    audit = sa.table(
        "audit_log",
        sa.column("id", sa.Integer()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("action", sa.String()),
        sa.column("object_type", sa.String()),
        sa.column("object_id", sa.String()),
        sa.column("details", sa.JSON()),
    )
    terminals = sa.table("terminals", sa.column("id", sa.String()))
    configs = sa.table(
        "terminal_configs",
        sa.column("terminal_id", sa.String()),
        sa.column("version", sa.BigInteger()),
        sa.column("document", sa.JSON()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    known = {tid for (tid,) in conn.execute(sa.select(terminals.c.id))}
    rows: dict[tuple[str, int], dict[str, object]] = {}
    pushes = conn.execute(
        sa.select(audit.c.at, audit.c.object_id, audit.c.details)
        .where(audit.c.action == "terminal.config.push", audit.c.object_type == "terminal")
        .order_by(audit.c.id)
    )
    for at, tid, details in pushes:
        document = (details or {}).get("config")
        version = (details or {}).get("version")
        if tid in known and isinstance(document, dict) and isinstance(version, int):
            rows[(tid, version)] = {
                "terminal_id": tid,
                "version": version,
                "document": document,
                "created_at": at,
            }
    if rows:
        conn.execute(configs.insert(), list(rows.values()))


def downgrade() -> None:
    op.drop_table("terminal_configs")
