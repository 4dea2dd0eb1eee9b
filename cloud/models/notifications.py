"""Notification targets and the notification ledger (which is also the outbox).

The ledger has one row per (state change, recipient, channel). The notifier
inserts rows ``queued`` in the same transaction that changes the alarm, and a
delivery worker picks rows whose ``next_attempt_at`` has come. A restart or a
mail-server outage therefore delays a notification but never drops it, and the
unique ``dedup_key`` makes a second insert of the same notification a no-op,
so it is never doubled. Billing counts ``billable`` rows that were sent.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from cloud.errors import InvalidTransition, InvalidValue
from cloud.models.base import Base, str_enum, utcnow
from cloud.models.enums import DeliveryChannel, DeliveryStatus, Severity
from cloud.models.tenancy import Customer, check_language, normalize_email
from protocol.limits import MAX_COND, MAX_STR

_DONE = (DeliveryStatus.SENT, DeliveryStatus.DEAD)


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe text."""
    return secrets.token_urlsafe(32)


class NotificationTarget(Base):
    """Where a customer wants alarms to go.

    Scope narrows with each non-None filter: ``terminal_id`` None means every
    terminal of the customer, ``channel_name`` None every channel (and the
    terminal's own conditions), ``cond`` None every alarm kind. ``address`` is an
    e-mail address, an http(s) URL or an Apprise URL (chat) depending on ``channel``; ``language``
    None means the customer's language.
    """

    __tablename__ = "notification_targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    terminal_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    cond: Mapped[str | None] = mapped_column(sa.String(MAX_COND))
    # One channel or contact input by its name (e.g. "leak1.ior", "di.di3");
    # None: alarms of every channel and of the terminal itself.
    channel_name: Mapped[str | None] = mapped_column(sa.String(MAX_STR))
    min_severity: Mapped[Severity] = mapped_column(
        str_enum(Severity, "min_severity"), default=Severity.WARNING
    )
    channel: Mapped[DeliveryChannel] = mapped_column(str_enum(DeliveryChannel, "target_channel"))
    address: Mapped[str] = mapped_column(sa.String(500))
    language: Mapped[str | None] = mapped_column(sa.String(8))
    notify_recovery: Mapped[bool] = mapped_column(default=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    # Webhook deliveries are signed with it (X-Mimamori-Signature, as forwarding);
    # shown to the customer once, when made. E-mail targets have one unused.
    hmac_secret: Mapped[str] = mapped_column(sa.String(128), default=new_secret)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer: Mapped[Customer] = relationship()

    @validates("language")
    def _check_language(self, _key: str, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @validates("address")
    def _check_address(self, _key: str, value: str) -> str:
        # channel may be assigned after address; then the check happens in
        # check_address() before use. Both orders are common in forms.
        if self.channel is not None:
            return check_address(self.channel, value)
        return value


# Apprise URL schemes a chat target may use: services reached over HTTP(S),
# so that the address guard holds for them (cloud.notify.chat). Slack,
# Microsoft Teams (workflows, and the older connectors), LINE, ntfy,
# Discord, Telegram, Google Chat, Mattermost, Rocket.Chat, Pushover,
# Gotify, Matrix, and generic JSON posts.
CHAT_SCHEMES = frozenset(
    {
        "slack",
        "workflows",
        "workflow",
        "msteams",
        "line",
        "ntfy",
        "ntfys",
        "discord",
        "tgram",
        "gchat",
        "mmost",
        "mmosts",
        "rocket",
        "rockets",
        "pover",
        "gotify",
        "gotifys",
        "matrix",
        "matrixs",
        "json",
        "jsons",
    }
)


def check_address(channel: DeliveryChannel, address: str) -> str:
    """Normalize an address for ``channel``; raise :class:`InvalidValue` if unusable."""
    if channel == DeliveryChannel.EMAIL:
        return normalize_email(address)
    if channel == DeliveryChannel.CHAT:
        scheme, sep, rest = address.strip().partition("://")
        if not sep or not rest or scheme.lower() not in CHAT_SCHEMES or len(address) > 500:
            raise InvalidValue(
                f"chat address must be a URL of one of: {', '.join(sorted(CHAT_SCHEMES))}"
            )
        return address.strip()
    if not address.startswith(("http://", "https://")) or len(address) > 500:
        raise InvalidValue(f"webhook address must be an http(s) URL: {address!r}")
    return address


class Delivery(Base):
    """One notification to one recipient over one channel (ledger row + outbox item)."""

    __tablename__ = "notification_ledger"
    __table_args__ = (
        sa.Index("ix_notification_ledger_due", "status", "next_attempt_at"),
        sa.CheckConstraint("attempts >= 0", name="attempts_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # None for notices not tied to one alarm (historical digest, maintenance).
    alarm_id: Mapped[int | None] = mapped_column(sa.ForeignKey("alarms.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    target_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("notification_targets.id", ondelete="SET NULL")
    )
    # What happened: raised, acknowledged, cleared, escalated, reminder, digest, ...
    event: Mapped[str] = mapped_column(sa.String(32))
    # Stable identity of this notification; a repeated insert is a no-op.
    dedup_key: Mapped[str] = mapped_column(sa.String(255), unique=True)
    channel: Mapped[DeliveryChannel] = mapped_column(str_enum(DeliveryChannel, "ledger_channel"))
    recipient: Mapped[str] = mapped_column(sa.String(500))
    language: Mapped[str] = mapped_column(sa.String(8), default="ja")
    payload: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    status: Mapped[DeliveryStatus] = mapped_column(
        str_enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    billable: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    def mark_sent(self, at: datetime) -> None:
        """Delivery succeeded; raise :class:`InvalidTransition` if already final."""
        self._check_open()
        self.attempts = (self.attempts or 0) + 1
        self.status, self.sent_at, self.next_attempt_at = DeliveryStatus.SENT, at, None

    def mark_failed(self, at: datetime, error: str, retry_in: timedelta | None) -> None:
        """Attempt failed: retry after ``retry_in``, or give up (dead) when it is None."""
        self._check_open()
        self.attempts = (self.attempts or 0) + 1
        self.last_error = error[:2000]
        if retry_in is None:
            self.status, self.next_attempt_at = DeliveryStatus.DEAD, None
        else:
            self.status, self.next_attempt_at = DeliveryStatus.FAILED, at + retry_in

    def _check_open(self) -> None:
        if self.status in _DONE:
            raise InvalidTransition(f"delivery {self.id} is already {self.status}")
