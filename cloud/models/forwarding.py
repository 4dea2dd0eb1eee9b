"""Forwarding endpoints: a customer's own server that receives SenML copies of data."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from cloud.errors import InvalidValue
from cloud.models.base import Base, utcnow

if TYPE_CHECKING:
    from cloud.models.tenancy import Customer


class ForwardingEndpoint(Base):
    """Where to POST a customer's data, and how the last attempts went.

    ``hmac_secret`` is kept in clear because the forwarder must sign with it
    (HMAC-SHA256 of the body); it is shown to the customer once and only ever
    compared on their side.
    """

    __tablename__ = "forwarding_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    # None forwards every terminal of the customer.
    terminal_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    url: Mapped[str] = mapped_column(sa.String(500))
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
        if not value.startswith(("http://", "https://")) or len(value) > 500:
            raise InvalidValue(f"forwarding URL must be http(s): {value!r}")
        return value

    @validates("hmac_secret")
    def _check_secret(self, _key: str, value: str) -> str:
        if len(value) < 16:
            raise InvalidValue("HMAC secret must be at least 16 characters")
        return value

    def record_attempt(self, at: datetime, status: int | None, error: str | None = None) -> None:
        """Remember the outcome of one POST (2xx is success)."""
        self.last_attempt_at, self.last_status = at, status
        if status is not None and 200 <= status < 300:
            self.last_success_at, self.last_error, self.consecutive_failures = at, None, 0
        else:
            self.last_error = (error or f"HTTP {status}")[:2000]
            self.consecutive_failures = (self.consecutive_failures or 0) + 1
