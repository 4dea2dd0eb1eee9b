"""Terminals, their channels (from birth frames), frame dedup and ingest counters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, validates

from cloud.errors import InvalidTransition, InvalidValue
from cloud.models.base import Base, str_enum, utcnow
from cloud.models.enums import ConfigStatus, Connectivity, TerminalStatus
from protocol.errors import ProtocolError
from protocol.frames import check_tid
from protocol.limits import MAX_CHANNELS, MAX_EXP, MAX_STR, MAX_TID

if TYPE_CHECKING:
    from cloud.models.tenancy import Customer


def check_terminal_id(value: str) -> str:
    """Return ``value`` if it is a valid terminal id, else raise :class:`InvalidValue`.

    The id is the MQTT username and a topic level, so the protocol's rule
    applies (``[A-Za-z0-9_-]``, 1..MAX_TID: no wildcard, separator or ":").
    """
    try:
        return str(check_tid(value))
    except ProtocolError as err:
        raise InvalidValue(str(err)) from err


class Terminal(Base):
    """A monitoring terminal. Its primary key is the terminal id (= MQTT username).

    ``credential_hash`` is the MQTT password in Mosquitto's ``$7$`` format
    (PBKDF2-SHA512, made by :mod:`cloud.broker.passwd`): it verifies, seeds a
    new broker, and is what a clustered broker's database authentication
    reads. ``credential_sealed`` is the same password sealed to the broker
    reconciler's public key (:mod:`cloud.broker.sealing`): Mosquitto's
    dynamic-security plugin accepts passwords only in plaintext, so only the
    reconciler can recreate an account a broker lost. ``status`` and the
    contract's end decide whether the account is enabled
    (:mod:`cloud.brokersync`).
    Config rollout: :meth:`push_config` then :meth:`config_acked`; the version
    in force (``config_version``) only moves when the terminal applied one.
    A pending config is published again after the ack deadline
    (``config_repushes``, ``config_repushed_at``).
    """

    __tablename__ = "terminals"

    id: Mapped[str] = mapped_column(sa.String(MAX_TID), primary_key=True)
    # None while in stock / before assignment to a customer.
    customer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200), default="")
    site_address: Mapped[str] = mapped_column(sa.Text, default="")
    credential_hash: Mapped[str | None] = mapped_column(sa.String(255))
    credential_sealed: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[TerminalStatus] = mapped_column(
        str_enum(TerminalStatus, "terminal_status"), default=TerminalStatus.ACTIVE
    )

    # Billing dates (calendar dates in the customer's zone, not instants).
    registered_on: Mapped[date | None]
    contract_start: Mapped[date | None]
    contract_end: Mapped[date | None]
    cancellation_notice_on: Mapped[date | None]

    firmware_version: Mapped[str | None] = mapped_column(sa.String(MAX_STR))
    # Config versions are u32 on the wire, hence BigInteger.
    config_version: Mapped[int | None] = mapped_column(sa.BigInteger)
    config_pending_version: Mapped[int | None] = mapped_column(sa.BigInteger)
    config_status: Mapped[ConfigStatus] = mapped_column(
        str_enum(ConfigStatus, "config_status"), default=ConfigStatus.NONE
    )
    config_reason: Mapped[str | None] = mapped_column(sa.String(255))
    config_status_at: Mapped[datetime | None]
    # Re-publications of the pending config after the ack deadline passed
    # (cloud.services.configs.repush_due); reset by each new config.
    config_repushes: Mapped[int] = mapped_column(default=0, server_default="0")
    config_repushed_at: Mapped[datetime | None]

    # The sensors the newest birth named (protocol: the birth's optional
    # ``devices``): ``[{"name", "model", "status"}, ...]``; None when the
    # terminal's firmware does not say (older terminals), [] for no wiring.
    devices: Mapped[list[dict[str, str]] | None] = mapped_column(sa.JSON(none_as_null=True))
    last_seen_at: Mapped[datetime | None]
    last_boot: Mapped[int | None] = mapped_column(sa.BigInteger)
    connectivity: Mapped[Connectivity] = mapped_column(
        str_enum(Connectivity, "connectivity"), default=Connectivity.UNKNOWN
    )
    connectivity_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # One way: terminals know their customer; a customer's terminals are a
    # query (models/terminals imports models/tenancy, never the reverse).
    customer: Mapped[Customer | None] = relationship()
    # Current channels only; retired rows stay reachable through queries.
    channels: Mapped[list[Channel]] = relationship(
        primaryjoin="and_(Terminal.id == Channel.terminal_id, Channel.retired_at.is_(None))",
        order_by="Channel.alias",
        viewonly=True,
    )

    @validates("id")
    def _check_id(self, _key: str, value: str) -> str:
        return check_terminal_id(value)

    def push_config(self, version: int, at: datetime) -> None:
        """Record that config ``version`` was published and awaits an ack."""
        if self.config_version is not None and version <= self.config_version:
            raise InvalidTransition(
                f"config {version} is not newer than {self.config_version} in force"
            )
        self.config_pending_version = version
        self.config_status = ConfigStatus.PENDING
        self.config_reason = None
        self.config_status_at = at
        self.config_repushes = 0
        self.config_repushed_at = None

    def config_acked(self, version: int, applied: bool, reason: str | None, at: datetime) -> None:
        """Apply the terminal's ack for ``version``.

        Raises :class:`InvalidTransition` for an ack of a version that is not
        the pending one (a stale or duplicated ack must not roll anything back).
        """
        if self.config_status != ConfigStatus.PENDING or version != self.config_pending_version:
            raise InvalidTransition(
                f"ack for config {version}, pending is {self.config_pending_version}"
            )
        if applied:
            self.config_version = version
            self.config_status = ConfigStatus.APPLIED
            self.config_reason = None
        else:
            self.config_status = ConfigStatus.REJECTED
            self.config_reason = (reason or "")[:255]
        self.config_status_at = at


class Channel(Base):
    """One channel a terminal announced in a birth frame.

    Rows are never updated in place: a birth that changes the channel list
    retires the current rows (``retired_at``) and adds new ones, so graphs of
    old data keep their units. Only current rows (``retired_at IS NULL``) must
    be unique per (terminal, alias) and per (terminal, name).
    """

    __tablename__ = "channels"
    __table_args__ = (
        sa.Index(
            "uq_channels_current_alias",
            "terminal_id",
            "alias",
            unique=True,
            sqlite_where=sa.text("retired_at IS NULL"),
            postgresql_where=sa.text("retired_at IS NULL"),
        ),
        sa.Index(
            "uq_channels_current_name",
            "terminal_id",
            "name",
            unique=True,
            sqlite_where=sa.text("retired_at IS NULL"),
            postgresql_where=sa.text("retired_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), index=True
    )
    alias: Mapped[int] = mapped_column(sa.SmallInteger)
    name: Mapped[str] = mapped_column(sa.String(MAX_STR))
    unit: Mapped[str] = mapped_column(sa.String(MAX_STR), default="")
    kind: Mapped[str] = mapped_column(sa.String(MAX_STR))
    exp: Mapped[int] = mapped_column(sa.SmallInteger, default=0)
    boot: Mapped[int] = mapped_column(sa.BigInteger)  # boot counter of the declaring birth
    declared_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]

    terminal: Mapped[Terminal] = relationship()


class ChannelSpec(NamedTuple):
    """A channel as a birth frame declares it."""

    alias: int
    name: str
    unit: str
    kind: str
    exp: int = 0


def apply_birth(
    session: Session, terminal_id: str, specs: Sequence[ChannelSpec], boot: int, at: datetime
) -> bool:
    """Make ``specs`` the terminal's current channels.

    Returns False if they equal the current ones (a reboot with the same
    sensors changes nothing), True if the old rows were retired and new rows
    added. Raises :class:`InvalidValue` for duplicate aliases or names, an
    alias outside 0..MAX_CHANNELS-1 or an exponent outside +-MAX_EXP.
    The caller commits.
    """
    _check_specs(specs)
    current = session.scalars(
        sa.select(Channel).where(Channel.terminal_id == terminal_id, Channel.retired_at.is_(None))
    ).all()
    wanted = sorted(ChannelSpec(*s) for s in specs)
    have = sorted(ChannelSpec(c.alias, c.name, c.unit, c.kind, c.exp) for c in current)
    if wanted == have:
        return False
    for row in current:
        row.retired_at = at
    # The partial unique indexes see the retirements only once they are flushed.
    session.flush()
    session.add_all(
        Channel(
            terminal_id=terminal_id,
            alias=s.alias,
            name=s.name,
            unit=s.unit,
            kind=s.kind,
            exp=s.exp,
            boot=boot,
            declared_at=at,
        )
        for s in wanted
    )
    session.flush()
    return True


def lock_terminals(session: Session, ids: Iterable[str]) -> dict[str, Terminal]:
    """Hold the rows of terminals ``ids`` until the transaction ends; return
    them by id, refreshed from the database (unknown ids are left out).

    PostgreSQL: ``SELECT ... FOR UPDATE`` in id order, so two transactions
    locking overlapping sets queue instead of deadlocking. SQLite has no row
    locks: a no-op UPDATE of the rows takes the database's write lock now (a
    transaction that has written holds it already), so nothing commits
    between the caller's reads and its writes.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    if session.get_bind().dialect.name != "postgresql":
        session.execute(
            sa.update(Terminal)
            .where(Terminal.id.in_(wanted))
            .values(name=Terminal.name)
            .execution_options(synchronize_session=False)
        )
    stmt = (
        sa.select(Terminal)
        .where(Terminal.id.in_(wanted))
        .order_by(Terminal.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {t.id: t for t in session.scalars(stmt)}


def _check_specs(specs: Sequence[ChannelSpec]) -> None:
    aliases = [s.alias for s in specs]
    names = [s.name for s in specs]
    if len(set(aliases)) != len(aliases) or len(set(names)) != len(names):
        raise InvalidValue("birth declares the same alias or name twice")
    for s in specs:
        if not 0 <= s.alias < MAX_CHANNELS:
            raise InvalidValue(f"alias {s.alias} outside 0..{MAX_CHANNELS - 1}")
        if not -MAX_EXP <= s.exp <= MAX_EXP:
            raise InvalidValue(f"exp {s.exp} outside -{MAX_EXP}..{MAX_EXP}")
        if not s.name:
            raise InvalidValue("channel name is empty")


class FrameReceipt(Base):
    """One (terminal, boot, seq) already ingested: the dedup key of QoS 1 redelivery.

    Insert with ON CONFLICT DO NOTHING; zero rows inserted means "seen before".
    Old rows are pruned by ``received_at`` once redelivery is no longer possible.
    """

    __tablename__ = "frame_receipts"

    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True
    )
    boot: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class IngestCounter(Base):
    """Per-terminal, per-UTC-day ingest figures (completeness, billing evidence)."""

    __tablename__ = "ingest_counters"

    terminal_id: Mapped[str] = mapped_column(
        sa.ForeignKey("terminals.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(primary_key=True)
    frames: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    samples: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    historical: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rejected: Mapped[int] = mapped_column(sa.BigInteger, default=0)
