"""Price list per service function

``prices``: the price of each item the service sells from a month on (rows
are only added, so the history stays). Invoice lines name their item.
Plans go: ``customers.plan`` and ``invoices.plan`` are dropped (prices are
per service function, the same for every customer).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(length=32), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=254), nullable=False),
        sa.CheckConstraint("unit_price >= 0", name=op.f("ck_prices_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prices")),
        sa.UniqueConstraint("item", "effective_from", name=op.f("uq_prices_item_effective_from")),
    )
    with op.batch_alter_table("invoice_lines") as batch:
        batch.add_column(sa.Column("item", sa.String(length=32), nullable=False, server_default=""))
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("plan")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("plan")


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column("plan", sa.String(length=32), nullable=False, server_default="standard")
        )
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("plan", sa.String(length=32), nullable=False, server_default=""))
    with op.batch_alter_table("invoice_lines") as batch:
        batch.drop_column("item")
    op.drop_table("prices")
