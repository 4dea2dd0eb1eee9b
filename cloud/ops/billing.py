"""Monthly invoices: what each customer owes for one calendar month.

Rules (docs/operations.md explains them for people):

- **Billing month**: the calendar month in the customer's time zone. The
  terminal dates (``registered_on``, ``contract_start``, ``contract_end``,
  ``cancellation_notice_on``) are calendar dates in that zone.
- **Base fee**: the plan's ``monthly_fee`` per terminal for every month of
  its contract, always a full month, never pro rata. The contract starts on
  ``contract_start`` (or ``registered_on`` when unset). A terminal that
  starts during a month is not charged for that month: the base fee runs
  from the first of the next month, unless the start is the 1st itself.
- **Registration fee**: the plan's ``registration_fee`` once per terminal,
  in the month of ``registered_on``.
- **Cancellation**: notice on or before the 15th ends the contract at the
  end of that month; notice from the 16th ends it at the end of the next
  month (:func:`contract_end_for_notice`). The month the contract ends in is
  billed in full. When both an explicit ``contract_end`` and a notice exist,
  the earlier end wins. A terminal cancelled in its first month therefore
  pays the registration fee only (notice by the 15th) or the fee plus one
  month (notice from the 16th).
- **Notification fee**: the plan's ``notification_fee`` per billable
  notification delivered in the month (``cloud.notify.ledger.billable_count``:
  billable ledger rows that reached ``sent`` with ``sent_at`` in the month).
- **Consumption tax**: ``tax_rate_percent`` (10 %) of the invoice subtotal,
  rounded down to whole yen once per invoice, as the qualified-invoice rules
  (適格請求書) require: one rounding per invoice and tax rate, never per line.

All amounts are ``int`` yen; no float is involved anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Customer, Terminal
from cloud.models.ops import Invoice, InvoiceLine
from cloud.notify.ledger import billable_count
from cloud.ops.errors import BillingError
from cloud.ops.schedule import next_month
from cloud.ops.settings import OpsSettings, Plan

CANCEL_BY_DAY = 15

LABELS = {
    "ja": {
        "base": "月額基本料 {plan} {terminal}",
        "registration": "初期登録料 {terminal}",
        "notification": "通知料 {month}配信分",
        "month": "{y}年{m}月",
    },
    "en": {
        "base": "Monthly fee ({plan}) {terminal}",
        "registration": "Registration fee {terminal}",
        "notification": "Notifications delivered in {month}",
        "month": "{y}-{m:02d}",
    },
}


def month_end(day: date) -> date:
    """Last day of the month holding ``day``."""
    return next_month(day) - timedelta(days=1)


def contract_end_for_notice(notice: date) -> date:
    """Last day of the contract for a cancellation notice given on ``notice``:
    the end of that month if given by the 15th, else the end of the next."""
    if notice.day <= CANCEL_BY_DAY:
        return month_end(notice)
    return month_end(next_month(notice))


def contract_start(terminal: Terminal) -> date | None:
    return terminal.contract_start or terminal.registered_on


def contract_end(terminal: Terminal) -> date | None:
    """The effective last day of the contract (None: open-ended)."""
    ends = [terminal.contract_end]
    if terminal.cancellation_notice_on is not None:
        ends.append(contract_end_for_notice(terminal.cancellation_notice_on))
    known = [e for e in ends if e is not None]
    return min(known) if known else None


def first_billed_month(start: date) -> date:
    """First month charged the base fee: the start month only if it starts on the 1st."""
    return start if start.day == 1 else next_month(start)


def owes_base_fee(terminal: Terminal, month: date) -> bool:
    """True if ``terminal`` owes the base fee for the month holding ``month``."""
    month = month.replace(day=1)
    start = contract_start(terminal)
    if start is None:
        return False
    end = contract_end(terminal)
    if end is not None and end < start:
        raise BillingError(f"terminal {terminal.id}: contract ends {end} before it starts {start}")
    if month < first_billed_month(start):
        return False
    return end is None or month <= end.replace(day=1)


def registered_in(terminal: Terminal, month: date) -> bool:
    r = terminal.registered_on
    return r is not None and r.replace(day=1) == month.replace(day=1)


def cancel(terminal: Terminal, notice_on: date) -> date:
    """Record a cancellation notice given on ``notice_on`` and return the
    resulting last day of the contract (also stored in ``contract_end``)."""
    terminal.cancellation_notice_on = notice_on
    end = contract_end_for_notice(notice_on)
    if terminal.contract_end is None or end < terminal.contract_end:
        terminal.contract_end = end
    return terminal.contract_end


@dataclass(frozen=True)
class Line:
    kind: str  # base / registration / notification
    terminal_id: str | None
    description: str
    quantity: int
    unit_price: int

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class Draft:
    """An invoice before it is stored."""

    customer_id: int
    customer_name: str
    period: date
    plan: str
    lines: tuple[Line, ...]
    tax_rate_percent: int

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def tax(self) -> int:
        # Floor division of non-negative ints: rounding down, once per invoice.
        return self.subtotal * self.tax_rate_percent // 100

    @property
    def total(self) -> int:
        return self.subtotal + self.tax


def local_month_range(month: date, zone_name: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the calendar month holding ``month`` in the zone."""
    zone = ZoneInfo(zone_name)
    first = month.replace(day=1)
    return (
        datetime.combine(first, time(0), zone).astimezone(UTC),
        datetime.combine(next_month(first), time(0), zone).astimezone(UTC),
    )


def plan_of(customer: Customer, ops: OpsSettings) -> Plan:
    plan = ops.plans.get(customer.plan)
    if plan is None:
        raise BillingError(
            f"customer {customer.id}: plan {customer.plan!r} has no prices "
            f"(known: {', '.join(sorted(ops.plans))})"
        )
    return plan


def compute(session: Session, customer: Customer, month: date, ops: OpsSettings) -> Draft:
    """The invoice of ``customer`` for the month holding ``month``.

    Raises :class:`BillingError` for a plan without prices or a terminal
    whose contract ends before it starts.
    """
    month = month.replace(day=1)
    plan = plan_of(customer, ops)
    labels = LABELS.get(customer.language, LABELS["ja"])
    month_text = labels["month"].format(y=month.year, m=month.month)
    terminals: Sequence[Terminal] = session.scalars(
        sa.select(Terminal).where(Terminal.customer_id == customer.id).order_by(Terminal.id)
    ).all()
    lines: list[Line] = []
    for t in terminals:
        name = f"{t.id} {t.name}".strip()
        if registered_in(t, month):
            lines.append(
                Line(
                    "registration",
                    t.id,
                    labels["registration"].format(terminal=name),
                    1,
                    plan.registration_fee,
                )
            )
        if owes_base_fee(t, month):
            lines.append(
                Line(
                    "base",
                    t.id,
                    labels["base"].format(plan=plan.name, terminal=name),
                    1,
                    plan.monthly_fee,
                )
            )
    start, end = local_month_range(month, customer.timezone)
    sent = billable_count(session, customer.id, start, end)
    if sent:
        lines.append(
            Line(
                "notification",
                None,
                labels["notification"].format(month=month_text),
                sent,
                plan.notification_fee,
            )
        )
    return Draft(customer.id, customer.name, month, plan.name, tuple(lines), ops.tax_rate_percent)


def invoice_number(customer_id: int, month: date) -> str:
    return f"{month:%Y%m}-{customer_id:06d}"


def store(session: Session, draft: Draft, now: datetime) -> Invoice:
    """Persist ``draft`` (replacing an invoice of the same customer and month)."""
    old = session.scalar(
        sa.select(Invoice).where(
            Invoice.customer_id == draft.customer_id, Invoice.period == draft.period
        )
    )
    if old is not None:
        session.delete(old)
        session.flush()
    invoice = Invoice(
        number=invoice_number(draft.customer_id, draft.period),
        customer_id=draft.customer_id,
        period=draft.period,
        customer_name=draft.customer_name,
        plan=draft.plan,
        subtotal=draft.subtotal,
        tax_rate_percent=draft.tax_rate_percent,
        tax=draft.tax,
        total=draft.total,
        issued_at=now,
        lines=[
            InvoiceLine(
                position=i,
                kind=ln.kind,
                terminal_id=ln.terminal_id,
                description=ln.description[:200],
                quantity=ln.quantity,
                unit_price=ln.unit_price,
                amount=ln.amount,
            )
            for i, ln in enumerate(draft.lines, start=1)
        ],
    )
    session.add(invoice)
    session.flush()
    return invoice


@dataclass(frozen=True)
class Run:
    issued: list[str]
    skipped: list[str]  # existing invoices left alone
    empty: list[int]  # customers with nothing to bill
    failed: dict[int, str]


def generate(
    session: Session,
    month: date,
    ops: OpsSettings,
    now: datetime,
    *,
    regenerate: bool = False,
    customer_ids: Sequence[int] | None = None,
) -> Run:
    """Issue the invoices of every customer for the month holding ``month``.

    Existing invoices are kept unless ``regenerate``. A customer whose invoice
    cannot be computed is listed in ``failed`` and does not stop the others.
    The caller commits.
    """
    month = month.replace(day=1)
    query = sa.select(Customer).order_by(Customer.id)
    if customer_ids is not None:
        query = query.where(Customer.id.in_(list(customer_ids)))
    issued, skipped, empty, failed = [], [], [], {}
    for customer in session.scalars(query).all():
        exists = session.scalar(
            sa.select(Invoice.number).where(
                Invoice.customer_id == customer.id, Invoice.period == month
            )
        )
        if exists and not regenerate:
            skipped.append(exists)
            continue
        try:
            draft = compute(session, customer, month, ops)
        except BillingError as err:
            failed[customer.id] = str(err)
            continue
        if not draft.lines:
            empty.append(customer.id)
            continue
        issued.append(store(session, draft, now).number)
    return Run(issued, skipped, empty, failed)
