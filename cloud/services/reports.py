"""Monthly reports and alarm history for the site and the API.

Reports are issued by the scheduler (:mod:`cloud.ops.report_issue`); here
they are listed and fetched through the customer scope (another customer's
report is simply not found), the month in progress is computed on request,
and the customer's administrators choose who gets the report mail (audited).
The alarm history export is the alarm list's filter as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import date, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from cloud.errors import InvalidValue
from cloud.models import Alarm, Customer, Terminal
from cloud.models.ops import MonthlyReport
from cloud.models.tenancy import normalize_email
from cloud.notify.render import COND_LABELS, SEVERITY_LABELS
from cloud.ops.reports import CustomerReport, customer_report
from cloud.services import audit, labels
from cloud.services.alarms import AlarmFilter, filtered
from cloud.services.errors import N_, Invalid
from cloud.services.scope import MANAGE_TARGETS, Viewer, get_scoped, require, scoped
from cloud.timeseries import TimeSeriesStore

MAX_RECIPIENTS = 20
MAX_ALARM_ROWS = 100_000  # a CSV export beyond this is cut (the header says so)


def customer_of(session: Session, viewer: Viewer, customer_id: int | None) -> Customer | None:
    """The customer whose reports are shown: a customer user's own; for
    staff, ``customer_id`` (None: none chosen). Another customer's id is
    not found."""
    if viewer.customer_id is not None:
        return get_scoped(session, viewer, Customer, viewer.customer_id)
    return None if customer_id is None else get_scoped(session, viewer, Customer, customer_id)


def issued(session: Session, viewer: Viewer, customer: Customer) -> list[MonthlyReport]:
    """The customer's issued reports, newest month first (files not loaded)."""
    return list(
        session.scalars(
            scoped(viewer, MonthlyReport)
            .where(MonthlyReport.customer_id == customer.id)
            .options(defer(MonthlyReport.pdf), defer(MonthlyReport.csv))
            .order_by(MonthlyReport.month.desc())
        )
    )


def issued_month(
    session: Session, viewer: Viewer, customer: Customer, month: date
) -> MonthlyReport | None:
    return session.scalars(
        scoped(viewer, MonthlyReport).where(
            MonthlyReport.customer_id == customer.id, MonthlyReport.month == month.replace(day=1)
        )
    ).first()


def so_far(
    session: Session,
    store: TimeSeriesStore,
    customer: Customer,
    *,
    now: datetime,
    sample_interval_s: int,
) -> CustomerReport:
    """The report of the month in progress (in the customer's zone), up to now."""
    month = now.astimezone(customer.zone).date().replace(day=1)
    return customer_report(
        session, store, customer, month, now=now, sample_interval_s=sample_interval_s
    )


def parse_recipients(text: str | Iterable[str]) -> list[str]:
    """Addresses, one per line (or comma), normalised and without repeats.
    Raises :class:`Invalid` naming the first bad one."""
    items = text.replace(",", "\n").splitlines() if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise Invalid(N_("Not an e-mail address: %(value)s"), value=str(raw))
        if not raw.strip():
            continue
        try:
            address = normalize_email(raw)
        except InvalidValue as err:
            raise Invalid(N_("Not an e-mail address: %(value)s"), value=raw.strip()) from err
        if address not in out:
            out.append(address)
    if len(out) > MAX_RECIPIENTS:
        raise Invalid(N_("At most %(n)s recipients."), n=MAX_RECIPIENTS)
    return out


def set_recipients(
    session: Session,
    viewer: Viewer,
    customer: Customer,
    addresses: list[str],
    *,
    now: datetime,
    ip: str | None,
) -> list[str]:
    """Who gets the report mail from next month on (customer administrators
    and operators). Audited with the list before and after."""
    require(viewer, MANAGE_TARGETS)
    before = list(customer.report_recipients or [])
    customer.report_recipients = addresses
    audit.record(
        session,
        viewer,
        "report.recipients",
        "customer",
        customer.id,
        at=now,
        ip=ip,
        customer_id=customer.id,
        details={"before": before, "after": addresses},
    )
    session.commit()
    return addresses


ALARM_HEADER = (
    "alarm",
    "terminal",
    "terminal_name",
    "channel",
    "channel_name",
    "condition",
    "condition_name",
    "severity",
    "severity_name",
    "state",
    "raised_at",
    "acknowledged_at",
    "comment",
    "cleared_at",
    "value",
    "threshold",
    "historical",
    "muted",
)


def alarm_csv(
    session: Session, viewer: Viewer, f: AlarmFilter, *, zone: ZoneInfo, language: str
) -> bytes:
    """The alarms ``viewer`` may see matching ``f`` (every page), newest first,
    as CSV: UTF-8 with a BOM, times in ``zone`` with their offset, channel
    names as the customer labelled them, condition and severity names in
    ``language`` beside their codes."""
    stmt = filtered(viewer, f).add_columns(Terminal)
    rows = session.execute(
        stmt.order_by(Alarm.raised_at.desc(), Alarm.id.desc()).limit(MAX_ALARM_ROWS)
    ).all()
    name = labels.names(session, [t.id for _a, t in rows])
    conds = COND_LABELS.get(language, COND_LABELS["en"])
    severities = SEVERITY_LABELS.get(language, SEVERITY_LABELS["en"])

    def at(value: datetime | None) -> str:
        return "" if value is None else value.astimezone(zone).isoformat(timespec="seconds")

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:g}"

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(ALARM_HEADER)
    for a, t in rows:
        w.writerow(
            (
                a.id,
                t.id,
                t.name,
                a.channel or "",
                name(t.id, a.channel),
                a.cond,
                conds.get(a.cond, a.cond),
                str(a.severity),
                severities.get(str(a.severity), str(a.severity)),
                str(a.state),
                at(a.raised_at),
                at(a.acked_at),
                a.ack_comment or "",
                at(a.cleared_at),
                number(a.value),
                number(a.threshold),
                "yes" if a.historical else "",
                "yes" if a.muted else "",
            )
        )
    return "\ufeff".encode() + out.getvalue().encode("utf-8")


def customer_names(session: Session) -> list[Customer]:
    """Customers for a staff member's choice, by name."""
    return list(session.scalars(sa.select(Customer).order_by(Customer.name, Customer.id)))
