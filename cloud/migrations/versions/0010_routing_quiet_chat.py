"""Routing per channel, maintenance windows, chat targets

- ``notification_targets.channel_name``: a target may narrow to one channel
  or contact input of the terminal;
- ``maintenance_windows``: periods in which alarms are recorded as muted
  and page nobody (``alarms.muted``); an announcement may carry one
  (``announcements.mutes_alarms``);
- delivery channel ``chat`` (Slack, Teams, LINE, ntfy, ... through Apprise)
  in ``notification_targets.channel`` and ``notification_ledger.channel``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("email", "webhook")
_NEW = ("email", "webhook", "chat")
_CHANNEL_COLUMNS = (
    ("notification_targets", "target_channel"),
    ("notification_ledger", "ledger_channel"),
)


def _channels(new: tuple[str, ...]) -> None:
    """Replace the CHECK constraint of the enum columns with one allowing ``new``."""
    inspector = sa.inspect(op.get_bind())
    allowed = ", ".join(f"'{v}'" for v in new)
    for table, name in _CHANNEL_COLUMNS:
        # Its name differs between the databases, so find it by its text.
        checks = [
            c["name"]
            for c in inspector.get_check_constraints(table)
            if c["name"] and "'webhook'" in str(c.get("sqltext", ""))
        ]
        with op.batch_alter_table(table) as batch:
            for check in checks:
                batch.drop_constraint(op.f(check), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_{name}"), f"channel IN ({allowed})")


def upgrade() -> None:
    with op.batch_alter_table("notification_targets") as batch:
        batch.add_column(sa.Column("channel_name", sa.String(length=64), nullable=True))
    with op.batch_alter_table("alarms") as batch:
        batch.add_column(
            sa.Column("muted", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("announcements") as batch:
        batch.add_column(
            sa.Column("mutes_alarms", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("terminal_id", sa.String(length=32), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("announcement_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "ends_at > starts_at", name=op.f("ck_maintenance_windows_ends_after_start")
        ),
        sa.ForeignKeyConstraint(
            ["announcement_id"],
            ["announcements.id"],
            name=op.f("fk_maintenance_windows_announcement_id_announcements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_maintenance_windows_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_maintenance_windows_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_maintenance_windows_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_maintenance_windows")),
    )
    op.create_index(
        op.f("ix_maintenance_windows_customer_id"), "maintenance_windows", ["customer_id"]
    )
    op.create_index("ix_maintenance_windows_ends_at", "maintenance_windows", ["ends_at"])
    _channels(_NEW)


def downgrade() -> None:
    op.execute("DELETE FROM notification_ledger WHERE channel = 'chat'")
    op.execute("DELETE FROM notification_targets WHERE channel = 'chat'")
    _channels(_OLD)
    op.drop_index("ix_maintenance_windows_ends_at", table_name="maintenance_windows")
    op.drop_index(op.f("ix_maintenance_windows_customer_id"), table_name="maintenance_windows")
    op.drop_table("maintenance_windows")
    with op.batch_alter_table("announcements") as batch:
        batch.drop_column("mutes_alarms")
    with op.batch_alter_table("alarms") as batch:
        batch.drop_column("muted")
    with op.batch_alter_table("notification_targets") as batch:
        batch.drop_column("channel_name")
