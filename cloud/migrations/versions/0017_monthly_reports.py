"""Monthly reports kept and mailed

``monthly_reports``: each customer's report of a month (PDF and CSV) as the
scheduler made it, for downloads and the report mail.
``customers.report_recipients``: the addresses the customer chose for it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 16:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "monthly_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("terminals", sa.Integer(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("csv", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_monthly_reports_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monthly_reports")),
        sa.UniqueConstraint(
            "customer_id", "month", name=op.f("uq_monthly_reports_customer_id_month")
        ),
    )
    op.create_index(
        op.f("ix_monthly_reports_customer_id"), "monthly_reports", ["customer_id"], unique=False
    )
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column("report_recipients", sa.JSON(), nullable=False, server_default="[]")
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("report_recipients")
    op.drop_index(op.f("ix_monthly_reports_customer_id"), table_name="monthly_reports")
    op.drop_table("monthly_reports")
