"""Monthly invoices: what each customer owes for one calendar month.

Rules (docs/operations.md explains them for people); prices come from the
price list in force on the first of the month (:mod:`cloud.ops.prices`):

- **Billing month**: the calendar month in the customer's time zone. The
  terminal dates (``registered_on``, ``contract_start``, ``contract_end``,
  ``cancellation_notice_on``) are calendar dates in that zone.
- **Monthly fees**: for every month of a terminal's contract, one line per
  service function the terminal uses that month (its wiring, data
  forwarding), always a full month, never pro rata. The contract starts on
  ``contract_start`` (or ``registered_on`` when unset). A terminal that
  starts during a month is not charged for that month: the monthly fees run
  from the first of the next month, unless the start is the 1st itself.
- **Registration fee**: once per terminal, in the month of ``registered_on``.
- **Cancellation**: notice on or before the 15th ends the contract at the
  end of that month; notice from the 16th ends it at the end of the next
  month (:func:`contract_end_for_notice`). The month the contract ends in is
  billed in full. When both an explicit ``contract_end`` and a notice exist,
  the earlier end wins. A terminal cancelled in its first month therefore
  pays the registration fee only (notice by the 15th) or the fee plus one
  month (notice from the 16th).
- **Notification fee**: per billable notification delivered in the month
  (``cloud.notify.ledger.billable_count``: billable ledger rows that reached
  ``sent`` with ``sent_at`` in the month).
- **Consumption tax**: ``tax_rate_percent`` (10 %) of the invoice subtotal,
  rounded down to whole yen once per invoice, as the qualified-invoice rules
  (適格請求書) require: one rounding per invoice and tax rate, never per line.

All amounts are ``int`` yen; no float is involved anywhere. An item priced
¥0 leaves no line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Channel, Customer, ForwardingEndpoint, Terminal
from cloud.models.ops import Invoice, InvoiceLine
from cloud.notify.ledger import billable_count
from cloud.ops import prices as price_list
from cloud.ops.errors import BillingError
from cloud.ops.schedule import next_month
from cloud.ops.settings import OpsSettings

CANCEL_BY_DAY = 15

LABELS = {
    "ja": {
        "base": "{item} 月額 {terminal}",
        "registration": "{item} {terminal}",
        "notification": "{item} {month}配信分",
        "month": "{y}年{m}月",
    },
    "en": {
        "base": "{item}, monthly, {terminal}",
        "registration": "{item} {terminal}",
        "notification": "{item}: delivered in {month}",
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
    item: str  # the price-list item
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


def functions_used(
    session: Session, customer_id: int, start: datetime, end: datetime
) -> dict[str, list[price_list.Item]]:
    """Service functions each terminal of the customer used in [start, end):
    the kinds of the channels it had in that time, and forwarding by an
    enabled endpoint that existed then. Two queries for the whole customer."""
    kinds: dict[str, set[str]] = {}
    for tid, kind in session.execute(
        sa.select(Channel.terminal_id, Channel.kind)
        .join(Terminal, Terminal.id == Channel.terminal_id)
        .where(
            Terminal.customer_id == customer_id,
            Channel.declared_at < end,
            sa.or_(Channel.retired_at.is_(None), Channel.retired_at >= start),
        )
        .distinct()
    ):
        kinds.setdefault(tid, set()).add(kind)
    covered = set(
        session.scalars(
            sa.select(ForwardingEndpoint.terminal_id).where(
                ForwardingEndpoint.customer_id == customer_id,
                ForwardingEndpoint.enabled.is_(True),
                ForwardingEndpoint.created_at < end,
            )
        )
    )
    terminal_ids = session.scalars(
        sa.select(Terminal.id).where(Terminal.customer_id == customer_id)
    )
    return {
        tid: price_list.functions_of(kinds.get(tid, set()), None in covered or tid in covered)
        for tid in terminal_ids
    }


def compute(session: Session, customer: Customer, month: date, ops: OpsSettings) -> Draft:
    """The invoice of ``customer`` for the month holding ``month``.

    Raises :class:`BillingError` for a terminal whose contract ends before it
    starts.
    """
    month = month.replace(day=1)
    prices = price_list.in_force(session, month)
    items = price_list.ITEMS
    language = customer.language if customer.language in LABELS else "ja"
    labels = LABELS[language]
    month_text = labels["month"].format(y=month.year, m=month.month)
    start, end = local_month_range(month, customer.timezone)
    used = functions_used(session, customer.id, start, end)
    terminals: Sequence[Terminal] = session.scalars(
        sa.select(Terminal).where(Terminal.customer_id == customer.id).order_by(Terminal.id)
    ).all()
    lines: list[Line] = []

    def add(kind: str, item: str, tid: str | None, text: str, quantity: int) -> None:
        if prices[item] > 0 and quantity > 0:
            lines.append(Line(kind, item, tid, text, quantity, prices[item]))

    for t in terminals:
        name = f"{t.id} {t.name}".strip()
        if registered_in(t, month):
            reg = items["registration"]
            text = labels["registration"].format(item=reg.name(language), terminal=name)
            add("registration", reg.code, t.id, text, 1)
        if owes_base_fee(t, month):
            for f in used.get(t.id, []):
                text = labels["base"].format(item=f.name(language), terminal=name)
                add("base", f.code, t.id, text, 1)
    sent = billable_count(session, customer.id, start, end)
    fee = items["notification"]
    text = labels["notification"].format(item=fee.name(language), month=month_text)
    add("notification", fee.code, None, text, sent)
    return Draft(customer.id, customer.name, month, tuple(lines), ops.tax_rate_percent)


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
        subtotal=draft.subtotal,
        tax_rate_percent=draft.tax_rate_percent,
        tax=draft.tax,
        total=draft.total,
        issued_at=now,
        lines=[
            InvoiceLine(
                position=i,
                kind=ln.kind,
                item=ln.item,
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
