"""Issuing a monthly report: made once, kept, mailed once to each recipient.

:func:`issue` computes a customer's report of a month (:mod:`cloud.ops.reports`),
stores its PDF and CSV in ``monthly_reports`` (replacing an earlier issue of
the same month) and queues one mail per address in the customer's
``report_recipients`` through the notification ledger, with the dedup key
``report:<customer>:<YYYY-MM>:<address hash>``: the outbox delivers it with
retries, a second run of the job (or a regeneration) never mails anyone
twice, and the mail carries the files as attachments, read from the table
when it is sent. Report mail is not billable.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import Customer, DeliveryChannel
from cloud.models.ops import MonthlyReport
from cloud.notify.ledger import insert
from cloud.ops.report_docs import report_csv, report_pdf
from cloud.ops.reports import CustomerReport, customer_report
from cloud.ops.settings import OpsSettings
from cloud.timeseries import TimeSeriesStore

KIND = "report"


def store(
    session: Session, report: CustomerReport, ops: OpsSettings, now: datetime
) -> MonthlyReport:
    """Keep the PDF and CSV of ``report`` (replacing the month's earlier ones)."""
    row = session.scalar(
        sa.select(MonthlyReport).where(
            MonthlyReport.customer_id == report.customer_id, MonthlyReport.month == report.month
        )
    )
    if row is None:
        row = MonthlyReport(customer_id=report.customer_id, month=report.month)
        session.add(row)
    row.terminals = len(report.terminals)
    row.pdf = report_pdf(report, ops)
    row.csv = report_csv(report)
    row.created_at = now
    session.flush()
    return row


def queue_mail(session: Session, customer: Customer, month: date, now: datetime) -> int:
    """Queue the report mail of ``month`` to each of the customer's recipients;
    returns how many were new (0 when they were queued before)."""
    added = 0
    for address in customer.report_recipients or []:
        digest = hashlib.sha256(address.encode()).hexdigest()[:16]
        added += insert(
            session,
            dedup_key=f"{KIND}:{customer.id}:{month:%Y-%m}:{digest}",
            event=KIND,
            channel=DeliveryChannel.EMAIL,
            recipient=address,
            language=customer.language,
            payload={
                "kind": KIND,
                "customer_id": customer.id,
                "customer": customer.name,
                "month": f"{month:%Y-%m}",
                "timezone": customer.timezone,
                "language": customer.language,
            },
            due_at=now,
            customer_id=customer.id,
            billable=False,
        )
    return added


def issue(
    session: Session,
    store_: TimeSeriesStore,
    customer: Customer,
    month: date,
    *,
    ops: OpsSettings,
    now: datetime,
) -> tuple[MonthlyReport, CustomerReport, int]:
    """Compute, keep and mail the report of ``month``: (row, report, mails
    newly queued). The caller commits."""
    report = customer_report(
        session,
        store_,
        customer,
        month,
        now=now,
        sample_interval_s=ops.report_sample_interval_s,
    )
    row = store(session, report, ops, now)
    return row, report, queue_mail(session, customer, report.month, now)
