"""Alarm conditions (thresholds pushed to terminals) and alarms (state machines)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cloud.errors import InvalidTransition, InvalidValue
from cloud.models.base import Base, str_enum, utcnow
from cloud.models.enums import AlarmState, Severity
from protocol.limits import MAX_COND, MAX_STR

_CHANNEL_SET = sa.text("channel IS NOT NULL")
_CHANNEL_UNSET = sa.text("channel IS NULL")
_OPEN_CHANNEL = sa.text("state <> 'cleared' AND channel IS NOT NULL")
_OPEN_TERMINAL = sa.text("state <> 'cleared' AND channel IS NULL")


class AlarmCondition(Base):
    """Thresholds for one condition of one terminal channel (or the terminal itself
    when ``channel`` is None, e.g. ``offline``).

    ``warn``/``alarm`` are levels in the channel's engineering unit; a level
    of None disables that severity. Leakage's "repeated short excursions"
    rule uses ``count`` excursions within ``window_s``. A temporary override
    (``override_*`` until ``override_until``) wins while it lasts and then
    reverts by itself: :meth:`levels` reads the clock, nothing has to undo it.
    """

    __tablename__ = "alarm_conditions"
    __table_args__ = (
        sa.Index(
            "uq_alarm_conditions_channel",
            "terminal_id",
            "channel",
            "cond",
            unique=True,
            sqlite_where=_CHANNEL_SET,
            postgresql_where=_CHANNEL_SET,
        ),
        sa.Index(
            "uq_alarm_conditions_terminal",
            "terminal_id",
            "cond",
            unique=True,
            sqlite_where=_CHANNEL_UNSET,
            postgresql_where=_CHANNEL_UNSET,
        ),
        sa.CheckConstraint(
            "hysteresis >= 0 AND on_delay_s >= 0 AND off_delay_s >= 0", name="non_negative"
        ),
        sa.CheckConstraint("(count IS NULL) = (window_s IS NULL)", name="count_with_window"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str | None] = mapped_column(sa.String(MAX_STR))
    cond: Mapped[str] = mapped_column(sa.String(MAX_COND))
    warn: Mapped[float | None] = mapped_column(sa.Double())
    alarm: Mapped[float | None] = mapped_column(sa.Double())
    hysteresis: Mapped[float] = mapped_column(sa.Double(), default=0.0)
    on_delay_s: Mapped[int] = mapped_column(default=0)
    off_delay_s: Mapped[int] = mapped_column(default=0)
    count: Mapped[int | None]
    window_s: Mapped[int | None]
    override_warn: Mapped[float | None] = mapped_column(sa.Double())
    override_alarm: Mapped[float | None] = mapped_column(sa.Double())
    override_until: Mapped[datetime | None]
    enabled: Mapped[bool] = mapped_column(default=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def levels(self, now: datetime) -> tuple[float | None, float | None]:
        """(warn, alarm) in force at ``now``: the override while it lasts."""
        if self.override_until is not None and now < self.override_until:
            return self.override_warn, self.override_alarm
        return self.warn, self.alarm

    def set_override(
        self, warn: float | None, alarm: float | None, until: datetime, now: datetime
    ) -> None:
        """Override the levels until ``until``; raise :class:`InvalidValue` if it is past."""
        if until <= now:
            raise InvalidValue("override must end in the future")
        self.override_warn, self.override_alarm, self.override_until = warn, alarm, until


class Alarm(Base):
    """One occurrence of a condition: raised -> (acknowledged) -> cleared.

    At most one open (not cleared) alarm exists per terminal, channel and
    condition; the database enforces it, so two ingest workers racing on the
    same excursion cannot both raise. ``historical`` marks alarms raised from
    late store-and-forward data (digest, not page).
    """

    __tablename__ = "alarms"
    __table_args__ = (
        # Two partial indexes rather than one on coalesce(channel, ''):
        # expression indexes cannot be reflected on SQLite, so Alembic could
        # not check them against the migrations.
        sa.Index(
            "uq_alarms_open_channel",
            "terminal_id",
            "channel",
            "cond",
            unique=True,
            sqlite_where=_OPEN_CHANNEL,
            postgresql_where=_OPEN_CHANNEL,
        ),
        sa.Index(
            "uq_alarms_open_terminal",
            "terminal_id",
            "cond",
            unique=True,
            sqlite_where=_OPEN_TERMINAL,
            postgresql_where=_OPEN_TERMINAL,
        ),
        sa.Index("ix_alarms_terminal_raised", "terminal_id", "raised_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    terminal_id: Mapped[str] = mapped_column(sa.ForeignKey("terminals.id"))
    channel: Mapped[str | None] = mapped_column(sa.String(MAX_STR))
    cond: Mapped[str] = mapped_column(sa.String(MAX_COND))
    severity: Mapped[Severity] = mapped_column(str_enum(Severity, "severity"))
    state: Mapped[AlarmState] = mapped_column(
        str_enum(AlarmState, "alarm_state"), default=AlarmState.RAISED, index=True
    )
    raised_at: Mapped[datetime]
    acked_at: Mapped[datetime | None]
    acked_by_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    ack_comment: Mapped[str | None] = mapped_column(sa.Text)
    cleared_at: Mapped[datetime | None]
    value: Mapped[float | None] = mapped_column(sa.Double())
    threshold: Mapped[float | None] = mapped_column(sa.Double())
    historical: Mapped[bool] = mapped_column(default=False)
    # Raised or escalated inside a maintenance window: recorded, paged to nobody.
    muted: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    last_reminder_at: Mapped[datetime | None]
    reminders: Mapped[int] = mapped_column(default=0)

    @property
    def is_open(self) -> bool:
        return self.state != AlarmState.CLEARED

    def acknowledge(self, user_id: int | None, at: datetime, comment: str | None = None) -> None:
        """raised -> acknowledged; raise :class:`InvalidTransition` otherwise."""
        if self.state != AlarmState.RAISED:
            raise InvalidTransition(f"alarm {self.id} is {self.state}, cannot acknowledge")
        self.state = AlarmState.ACKNOWLEDGED
        self.acked_at, self.acked_by_id, self.ack_comment = at, user_id, comment

    def clear(self, at: datetime, value: float | None = None) -> None:
        """raised/acknowledged -> cleared; raise :class:`InvalidTransition` if cleared."""
        if self.state == AlarmState.CLEARED:
            raise InvalidTransition(f"alarm {self.id} is already cleared")
        self.state = AlarmState.CLEARED
        self.cleared_at = at
        if value is not None:
            self.value = value

    def change_severity(self, severity: Severity, value: float, threshold: float) -> bool:
        """Escalate or de-escalate an open alarm; True if the severity changed.
        Raises :class:`InvalidTransition` on a cleared alarm."""
        if self.state == AlarmState.CLEARED:
            raise InvalidTransition(f"alarm {self.id} is cleared")
        changed = severity != self.severity
        self.severity, self.value, self.threshold = severity, value, threshold
        return changed

    def reminded(self, at: datetime) -> None:
        """Record a reminder sent at ``at`` (reminders stop at acknowledge or clear)."""
        if self.state != AlarmState.RAISED:
            raise InvalidTransition(f"alarm {self.id} is {self.state}, no reminders")
        self.last_reminder_at = at
        self.reminders = (self.reminders or 0) + 1
