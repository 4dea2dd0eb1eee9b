"""Customers (tenants) and the people who log in."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from cloud.errors import InvalidValue
from cloud.models.base import Base, str_enum, utcnow
from cloud.models.enums import CUSTOMER_ROLES, Role

LANGUAGES = ("ja", "en")
# Deliberately loose: one "@", no spaces; the mail server is the real judge.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_language(value: str) -> str:
    if value not in LANGUAGES:
        raise InvalidValue(f"language {value!r} is not one of {LANGUAGES}")
    return value


def normalize_email(value: str) -> str:
    """Lower-cased, trimmed address; raise :class:`InvalidValue` if it is not one."""
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidValue(f"not an e-mail address: {value!r}")
    return value


class Customer(Base):
    """A tenant: owns terminals, users, notification targets and invoices."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    # Contracted demand for the 30-minute demand alarm; None disables it.
    contracted_demand_kw: Mapped[float | None] = mapped_column(sa.Double())
    timezone: Mapped[str] = mapped_column(sa.String(64), default="Asia/Tokyo")
    language: Mapped[str] = mapped_column(sa.String(8), default="ja")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who gets the monthly report by mail (addresses; chosen by the customer).
    report_recipients: Mapped[list[str]] = mapped_column(sa.JSON, default=list)

    users: Mapped[list[User]] = relationship(back_populates="customer")

    @validates("timezone")
    def _check_timezone(self, _key: str, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise InvalidValue(f"unknown time zone {value!r}") from err
        return value

    @validates("language")
    def _check_language(self, _key: str, value: str) -> str:
        return check_language(value)

    @validates("contracted_demand_kw")
    def _check_demand(self, _key: str, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise InvalidValue(f"contracted demand must be > 0 kW, got {value}")
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The customer's zone, for rendering times in mail, CSV and reports."""
        return ZoneInfo(self.timezone)


class User(Base):
    """A login. Staff (operator, installer) have no customer; customer roles must.

    ``password_hash`` and ``api_token_hash`` hold hashes only; hashing policy
    belongs to the auth layer. Failed-login counters support lock-out.
    """

    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint(
            "role NOT IN ({}) OR customer_id IS NOT NULL".format(
                ", ".join(f"'{r.value}'" for r in CUSTOMER_ROLES)
            ),
            name="customer_role_needs_customer",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"))
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    language: Mapped[str] = mapped_column(sa.String(8), default="ja")
    api_token_hash: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    api_token_created_at: Mapped[datetime | None]
    api_token_expires_at: Mapped[datetime | None]
    api_token_last_used_at: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    last_failed_login_at: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Two-factor authentication (TOTP, RFC 6238; cloud.services.twofactor):
    # the shared secret (base32; set while enrolling, before it is confirmed),
    # when it was confirmed (None: not in use), and the newest time step a
    # code was accepted for (a code is good once).
    totp_secret: Mapped[str | None] = mapped_column(sa.String(64))
    totp_enabled_at: Mapped[datetime | None]
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger())

    customer: Mapped[Customer | None] = relationship(back_populates="users")
    recovery_codes: Mapped[list[RecoveryCode]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    @validates("email")
    def _check_email(self, _key: str, value: str) -> str:
        return normalize_email(value)

    @validates("language")
    def _check_language(self, _key: str, value: str) -> str:
        return check_language(value)

    @property
    def is_staff(self) -> bool:
        return self.role not in CUSTOMER_ROLES

    def record_failed_login(self, at: datetime, lock_after: int, lock_for_s: int) -> bool:
        """Count a failed login at ``at``; lock the account for ``lock_for_s``
        seconds once ``lock_after`` consecutive failures are reached.
        Returns True if this failure locked the account."""
        self.failed_logins = (self.failed_logins or 0) + 1
        self.last_failed_login_at = at
        if self.failed_logins >= lock_after:
            self.locked_until = at + timedelta(seconds=lock_for_s)
            return True
        return False

    def record_login(self, at: datetime) -> None:
        """A successful login clears the failure counter and any lock."""
        self.failed_logins = 0
        self.locked_until = None
        self.last_login_at = at

    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    @property
    def may_log_in(self) -> bool:
        """Active, and so is the customer (a deactivated customer's users are
        locked out of the site and the API alike)."""
        return bool(self.active) and (self.customer is None or bool(self.customer.active))

    @property
    def two_factor(self) -> bool:
        """True when logging in asks for a second factor (TOTP or a recovery code)."""
        return self.totp_enabled_at is not None and self.totp_secret is not None

    def drop_api_token(self) -> bool:
        """Forget the API token (revoked, or the password changed); True if there was one."""
        had = self.api_token_hash is not None
        self.api_token_hash = None
        self.api_token_created_at = self.api_token_expires_at = None
        self.api_token_last_used_at = None
        return had


class RecoveryCode(Base):
    """A one-time code that stands in for the authenticator app (lost phone).

    Only the SHA-256 of the code is kept: codes carry 80 random bits, so the
    hash leaves nothing to guess (as for API tokens, unlike passwords).
    """

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="recovery_codes")
