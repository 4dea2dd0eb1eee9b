"""Operations tables: scheduler lease and job runs, health checks, the price
list, invoices, maintenance announcements.

All money columns are integer yen (``BigInteger``); nothing here is a float.
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloud.models.base import Base, utcnow


class SchedulerLease(Base):
    """The leader lock of the scheduler: one row per lock name.

    The process named in ``holder`` may run jobs until ``expires_at``; it
    renews well before then. Anyone may take over a row whose lease expired.
    Taking and renewing are one conditional UPDATE, which both databases
    serialise, so two processes can never both believe they hold it.
    """

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(200))
    expires_at: Mapped[datetime]
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]


class JobRun(Base):
    """One run of one scheduled job for one slot (e.g. the backup of a day).

    ``(job, slot)`` is unique: the insert that claims a slot is the fence
    that keeps a job from running twice even if two processes both thought
    they were leader (a paused process waking up after its lease expired).
    """

    __tablename__ = "job_runs"
    __table_args__ = (sa.UniqueConstraint("job", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(sa.String(64))
    slot: Mapped[str] = mapped_column(sa.String(64))
    holder: Mapped[str] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default="running")  # running/ok/error
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
    detail: Mapped[str] = mapped_column(sa.Text, default="")


class HealthCheck(Base):
    """Result of checking one component during one UTC minute.

    ``at`` is the start of the minute. Several checks in one minute fold into
    one row, which is up only if every one of them was (see
    :func:`cloud.ops.availability.record`). A minute with no row is unknown.
    """

    __tablename__ = "health_checks"
    __table_args__ = (sa.UniqueConstraint("component", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    component: Mapped[str] = mapped_column(sa.String(32))
    at: Mapped[datetime] = mapped_column(index=True)
    ok: Mapped[bool]
    detail: Mapped[str] = mapped_column(sa.String(500), default="")
    latency_ms: Mapped[int] = mapped_column(default=0)
    # Figures the check read, e.g. {"clients_connected": 42} for the broker.
    figures: Mapped[dict[str, int] | None] = mapped_column(sa.JSON(none_as_null=True))


class Price(Base):
    """One item of the price list at one price from ``effective_from`` on.

    Rows are only ever added: a change is a new row with a later date, so the
    price of any past month can still be told (and audited). The price in
    force on a day is the row of the item with the latest ``effective_from``
    on or before it; an item without such a row costs its shipped default
    (:mod:`cloud.ops.prices`). ``effective_from`` is the first of a month.
    """

    __tablename__ = "prices"
    __table_args__ = (
        sa.UniqueConstraint("item", "effective_from"),
        sa.CheckConstraint("unit_price >= 0", name="not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(sa.String(32))
    effective_from: Mapped[date]
    unit_price: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(254), default="")


class Invoice(Base):
    """A customer's invoice for one calendar month (``period`` = its first day).

    Amounts are integer yen: ``subtotal`` is the sum of the lines, ``tax`` the
    consumption tax on the subtotal rounded down once per invoice, ``total``
    their sum. Issued invoices are never edited; regenerating replaces them.
    """

    __tablename__ = "invoices"
    __table_args__ = (
        sa.UniqueConstraint("customer_id", "period"),
        sa.CheckConstraint("subtotal >= 0 AND tax >= 0 AND total = subtotal + tax", name="sums"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(sa.String(32), unique=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"), index=True)
    period: Mapped[date]
    customer_name: Mapped[str] = mapped_column(sa.String(200))
    subtotal: Mapped[int] = mapped_column(sa.BigInteger)
    tax_rate_percent: Mapped[int]
    tax: Mapped[int] = mapped_column(sa.BigInteger)
    total: Mapped[int] = mapped_column(sa.BigInteger)
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice",
        order_by="InvoiceLine.position",
        cascade="all, delete-orphan",
    )


class InvoiceLine(Base):
    """One line: ``quantity`` x ``unit_price`` = ``amount`` (integer yen).

    ``kind`` is how it is charged (base: monthly per terminal, registration,
    notification); ``item`` the price-list item (e.g. ``insulation``)."""

    __tablename__ = "invoice_lines"
    __table_args__ = (sa.CheckConstraint("amount = quantity * unit_price", name="amount"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(
        sa.ForeignKey("invoices.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(sa.String(16))  # base / registration / notification
    item: Mapped[str] = mapped_column(sa.String(32), default="")
    terminal_id: Mapped[str | None] = mapped_column(sa.String(32))
    description: Mapped[str] = mapped_column(sa.String(200))
    quantity: Mapped[int] = mapped_column(sa.BigInteger)
    unit_price: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[int] = mapped_column(sa.BigInteger)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")


class MonthlyReport(Base):
    """A customer's monthly report as issued (``month`` = its first day): the
    PDF and the CSV, made once by the scheduler, downloaded from the site
    and the API and attached to the report mail. Regenerating replaces them."""

    __tablename__ = "monthly_reports"
    __table_args__ = (sa.UniqueConstraint("customer_id", "month"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    month: Mapped[date]
    terminals: Mapped[int]
    pdf: Mapped[bytes] = mapped_column(sa.LargeBinary)
    csv: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def file_name(self, extension: str) -> str:
        """``report-2026-03-000012.pdf``: how downloads and attachments are named."""
        return f"report-{self.month:%Y-%m}-{self.customer_id:06d}.{extension}"


class Announcement(Base):
    """Planned maintenance, mailed to the affected customers ahead of time.

    ``customer_ids`` None means every active customer. ``notified_at`` is set
    once the ledger rows were queued (their dedup keys make a repeat harmless).
    """

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text, default="")
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    components: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    customer_ids: Mapped[list[int] | None] = mapped_column(sa.JSON)
    lead_hours: Mapped[int | None]  # None: the configured default
    # True: the customers' alarms are muted during the window
    # (cloud.models.MaintenanceWindow rows carry it out).
    mutes_alarms: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notified_at: Mapped[datetime | None]
