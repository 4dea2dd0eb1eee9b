"""Forwarding endpoints: a customer's own server that receives copies of data,
as SenML webhooks or as periodic CSV files by SFTP."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from cloud.errors import InvalidValue
from cloud.models.base import Base, utcnow

if TYPE_CHECKING:
    from cloud.models.tenancy import Customer


KINDS = ("webhook", "sftp")
FILE_PERIODS = ("hourly", "daily")
FILE_SCOPES = ("terminal", "customer")


class ForwardingEndpoint(Base):
    """Where to send a customer's data, and how the last attempts went.

    ``kind`` "webhook": every accepted frame is POSTed to ``url`` as SenML,
    signed with ``hmac_secret`` (kept in clear because the forwarder must sign
    with it; shown to the customer once). ``kind`` "sftp": ``url`` is
    ``sftp://user@host[:port]/directory`` and a CSV file per ``file_period``
    (per terminal or per customer, ``file_scope``; periods in
    ``file_timezone``) is uploaded there (:mod:`cloud.notify.files`),
    authenticating with the endpoint's own key (``ssh_key``, made by the site;
    the customer installs its public half) to a server whose host key must
    be ``host_key`` ("<type> <base64>", pinned). ``files_from`` is the start
    of the first period to deliver, ``files_until`` the end of the last one
    queued.
    """

    __tablename__ = "forwarding_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    # None forwards every terminal of the customer.
    terminal_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    kind: Mapped[str] = mapped_column(sa.String(16), default="webhook", server_default="webhook")
    url: Mapped[str] = mapped_column(sa.String(500))
    host_key: Mapped[str | None] = mapped_column(sa.Text)
    ssh_key: Mapped[str | None] = mapped_column(sa.Text)
    file_period: Mapped[str | None] = mapped_column(sa.String(8))
    file_scope: Mapped[str | None] = mapped_column(sa.String(16))
    file_timezone: Mapped[str | None] = mapped_column(sa.String(64))
    files_from: Mapped[datetime | None]
    files_until: Mapped[datetime | None]
    hmac_secret: Mapped[str] = mapped_column(sa.String(128))
    enabled: Mapped[bool] = mapped_column(default=True)
    last_status: Mapped[int | None]  # HTTP status of the last attempt, None = no answer
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_attempt_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer: Mapped[Customer] = relationship()

    @validates("url")
    def _check_url(self, _key: str, value: str) -> str:
        if not value.startswith(("http://", "https://", "sftp://")) or len(value) > 500:
            raise InvalidValue(f"forwarding URL must be http(s) or sftp: {value!r}")
        return value

    @validates("hmac_secret")
    def _check_secret(self, _key: str, value: str) -> str:
        if len(value) < 16:
            raise InvalidValue("HMAC secret must be at least 16 characters")
        return value

    def record_attempt(
        self, at: datetime, status: int | None, error: str | None = None, *, ok: bool | None = None
    ) -> None:
        """Remember the outcome of one delivery: a POST (2xx is success) or,
        with ``ok`` given, a file upload (no status)."""
        self.last_attempt_at, self.last_status = at, status
        if ok is None:
            ok = status is not None and 200 <= status < 300
        if ok:
            self.last_success_at, self.last_error, self.consecutive_failures = at, None, 0
        else:
            self.last_error = (error or f"HTTP {status}")[:2000]
            self.consecutive_failures = (self.consecutive_failures or 0) + 1
