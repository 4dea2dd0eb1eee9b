"""Initial schema

Tenants, users, terminals, channels, alarm conditions and alarms, notification
targets and ledger, forwarding endpoints, audit log, frame dedup, ingest
counters, and the tables of the SQL time-series backend.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 03:09:08.122247
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("plan", sa.String(length=32), nullable=False),
        sa.Column("contracted_demand_kw", sa.Double(), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
    )

    op.create_table(
        "ts_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ts_series")),
        sa.UniqueConstraint("terminal", "channel", name=op.f("uq_ts_series_terminal_channel")),
    )

    op.create_table(
        "terminals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("site_address", sa.Text(), nullable=False),
        sa.Column("credential_hash", sa.String(length=255), nullable=True),
        sa.Column("registered_on", sa.Date(), nullable=True),
        sa.Column("contract_start", sa.Date(), nullable=True),
        sa.Column("contract_end", sa.Date(), nullable=True),
        sa.Column("cancellation_notice_on", sa.Date(), nullable=True),
        sa.Column("firmware_version", sa.String(length=64), nullable=True),
        sa.Column("config_version", sa.BigInteger(), nullable=True),
        sa.Column("config_pending_version", sa.BigInteger(), nullable=True),
        sa.Column(
            "config_status",
            sa.Enum(
                "none",
                "pending",
                "applied",
                "rejected",
                name="config_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("config_reason", sa.String(length=255), nullable=True),
        sa.Column("config_status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_boot", sa.BigInteger(), nullable=True),
        sa.Column(
            "connectivity",
            sa.Enum(
                "unknown",
                "online",
                "offline",
                name="connectivity",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("connectivity_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_terminals_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminals")),
    )
    op.create_index(op.f("ix_terminals_customer_id"), "terminals", ["customer_id"], unique=False)
    op.create_table(
        "ts_rollups",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("min", sa.Double(), nullable=False),
        sa.Column("max", sa.Double(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["ts_series.id"], name=op.f("fk_ts_rollups_series_id_ts_series")
        ),
        sa.PrimaryKeyConstraint("series_id", "width", "bucket", name=op.f("pk_ts_rollups")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "ts_samples",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("quality", sa.Integer(), nullable=False),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["ts_series.id"], name=op.f("fk_ts_samples_series_id_ts_series")
        ),
        sa.PrimaryKeyConstraint("series_id", "ts", name=op.f("pk_ts_samples")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "operator",
                "installer",
                "customer_admin",
                "customer_viewer",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("api_token_hash", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("last_failed_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role NOT IN ('customer_admin', 'customer_viewer') OR customer_id IS NOT NULL",
            name=op.f("ck_users_customer_role_needs_customer"),
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_users_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("api_token_hash", name=op.f("uq_users_api_token_hash")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_index(op.f("ix_users_customer_id"), "users", ["customer_id"], unique=False)
    op.create_table(
        "alarm_conditions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("cond", sa.String(length=16), nullable=False),
        sa.Column("warn", sa.Double(), nullable=True),
        sa.Column("alarm", sa.Double(), nullable=True),
        sa.Column("hysteresis", sa.Double(), nullable=False),
        sa.Column("on_delay_s", sa.Integer(), nullable=False),
        sa.Column("off_delay_s", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("window_s", sa.Integer(), nullable=True),
        sa.Column("override_warn", sa.Double(), nullable=True),
        sa.Column("override_alarm", sa.Double(), nullable=True),
        sa.Column("override_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(count IS NULL) = (window_s IS NULL)",
            name=op.f("ck_alarm_conditions_count_with_window"),
        ),
        sa.CheckConstraint(
            "hysteresis >= 0 AND on_delay_s >= 0 AND off_delay_s >= 0",
            name=op.f("ck_alarm_conditions_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_alarm_conditions_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm_conditions")),
    )
    op.create_index(
        op.f("ix_alarm_conditions_terminal_id"), "alarm_conditions", ["terminal_id"], unique=False
    )
    op.create_index(
        "uq_alarm_conditions_channel",
        "alarm_conditions",
        ["terminal_id", "channel", "cond"],
        unique=True,
        sqlite_where=sa.text("channel IS NOT NULL"),
        postgresql_where=sa.text("channel IS NOT NULL"),
    )
    op.create_index(
        "uq_alarm_conditions_terminal",
        "alarm_conditions",
        ["terminal_id", "cond"],
        unique=True,
        sqlite_where=sa.text("channel IS NULL"),
        postgresql_where=sa.text("channel IS NULL"),
    )

    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("cond", sa.String(length=16), nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "warning",
                "alarm",
                name="severity",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "raised",
                "acknowledged",
                "cleared",
                name="alarm_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acked_by_id", sa.Integer(), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("threshold", sa.Double(), nullable=True),
        sa.Column("historical", sa.Boolean(), nullable=False),
        sa.Column("last_reminder_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["acked_by_id"],
            ["users.id"],
            name=op.f("fk_alarms_acked_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_alarms_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    op.create_index(op.f("ix_alarms_state"), "alarms", ["state"], unique=False)
    op.create_index(
        "ix_alarms_terminal_raised", "alarms", ["terminal_id", "raised_at"], unique=False
    )
    op.create_index(
        "uq_alarms_open_channel",
        "alarms",
        ["terminal_id", "channel", "cond"],
        unique=True,
        sqlite_where=sa.text("state <> 'cleared' AND channel IS NOT NULL"),
        postgresql_where=sa.text("state <> 'cleared' AND channel IS NOT NULL"),
    )
    op.create_index(
        "uq_alarms_open_terminal",
        "alarms",
        ["terminal_id", "cond"],
        unique=True,
        sqlite_where=sa.text("state <> 'cleared' AND channel IS NULL"),
        postgresql_where=sa.text("state <> 'cleared' AND channel IS NULL"),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["users.id"],
            name=op.f("fk_audit_log_actor_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_audit_log_customer_id_customers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"], unique=False)
    op.create_index(op.f("ix_audit_log_customer_id"), "audit_log", ["customer_id"], unique=False)
    op.create_index("ix_audit_log_object", "audit_log", ["object_type", "object_id"], unique=False)
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("alias", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("unit", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("exp", sa.SmallInteger(), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("declared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_channels_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
    )
    op.create_index(op.f("ix_channels_terminal_id"), "channels", ["terminal_id"], unique=False)
    op.create_index(
        "uq_channels_current_alias",
        "channels",
        ["terminal_id", "alias"],
        unique=True,
        sqlite_where=sa.text("retired_at IS NULL"),
        postgresql_where=sa.text("retired_at IS NULL"),
    )
    op.create_index(
        "uq_channels_current_name",
        "channels",
        ["terminal_id", "name"],
        unique=True,
        sqlite_where=sa.text("retired_at IS NULL"),
        postgresql_where=sa.text("retired_at IS NULL"),
    )

    op.create_table(
        "forwarding_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("hmac_secret", sa.String(length=128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_forwarding_endpoints_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_forwarding_endpoints_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forwarding_endpoints")),
    )
    op.create_index(
        op.f("ix_forwarding_endpoints_customer_id"),
        "forwarding_endpoints",
        ["customer_id"],
        unique=False,
    )

    op.create_table(
        "frame_receipts",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("boot", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_frame_receipts_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "boot", "seq", name=op.f("pk_frame_receipts")),
    )
    op.create_index(
        op.f("ix_frame_receipts_received_at"), "frame_receipts", ["received_at"], unique=False
    )

    op.create_table(
        "ingest_counters",
        sa.Column("terminal_id", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("frames", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.BigInteger(), nullable=False),
        sa.Column("duplicates", sa.BigInteger(), nullable=False),
        sa.Column("historical", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_ingest_counters_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("terminal_id", "day", name=op.f("pk_ingest_counters")),
    )

    op.create_table(
        "notification_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("terminal_id", sa.String(length=32), nullable=True),
        sa.Column("cond", sa.String(length=16), nullable=True),
        sa.Column(
            "min_severity",
            sa.Enum(
                "warning",
                "alarm",
                name="min_severity",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "webhook",
                name="target_channel",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("notify_recovery", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_notification_targets_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["terminal_id"],
            ["terminals.id"],
            name=op.f("fk_notification_targets_terminal_id_terminals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_targets")),
    )
    op.create_index(
        op.f("ix_notification_targets_customer_id"),
        "notification_targets",
        ["customer_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_notification_targets_terminal_id"),
        "notification_targets",
        ["terminal_id"],
        unique=False,
    )

    op.create_table(
        "notification_ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column(
            "channel",
            sa.Enum(
                "email",
                "webhook",
                name="ledger_channel",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("recipient", sa.String(length=500), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "sent",
                "failed",
                "dead",
                name="delivery_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("billable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "attempts >= 0", name=op.f("ck_notification_ledger_attempts_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms.id"], name=op.f("fk_notification_ledger_alarm_id_alarms")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_notification_ledger_customer_id_customers"),
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["notification_targets.id"],
            name=op.f("fk_notification_ledger_target_id_notification_targets"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_ledger")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_notification_ledger_dedup_key")),
    )
    op.create_index(
        op.f("ix_notification_ledger_alarm_id"), "notification_ledger", ["alarm_id"], unique=False
    )
    op.create_index(
        op.f("ix_notification_ledger_customer_id"),
        "notification_ledger",
        ["customer_id"],
        unique=False,
    )
    op.create_index(
        "ix_notification_ledger_due",
        "notification_ledger",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    # Dropping a table drops its indexes and constraints; children go first.
    for table in (
        "notification_ledger",
        "notification_targets",
        "ingest_counters",
        "frame_receipts",
        "forwarding_endpoints",
        "channels",
        "audit_log",
        "alarms",
        "alarm_conditions",
        "users",
        "ts_samples",
        "ts_rollups",
        "terminals",
        "ts_series",
        "customers",
    ):
        op.drop_table(table)
