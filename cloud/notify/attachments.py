"""Files a mail carries, read from the database when it is sent.

Only the monthly report mail has any: the PDF and the CSV of the report its
payload names (``customer_id``, ``month``), as kept in ``monthly_reports``,
so a report regenerated before the mail went out is sent as regenerated.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models.ops import MonthlyReport
from cloud.notify.errors import RenderError
from cloud.notify.mail import Attachment


def for_payload(session: Session, payload: dict[str, Any]) -> list[Attachment]:
    """The attachments of a mail with ``payload`` (none for most kinds).
    Raises :class:`RenderError` when the report it names is not kept."""
    if payload.get("kind") != "report":
        return []
    try:
        month = date.fromisoformat(f"{payload['month']}-01")
        customer_id = int(payload["customer_id"])
    except (KeyError, TypeError, ValueError) as err:
        raise RenderError(f"report payload without a month and customer: {err}") from err
    row = session.scalar(
        sa.select(MonthlyReport).where(
            MonthlyReport.customer_id == customer_id, MonthlyReport.month == month
        )
    )
    if row is None:
        raise RenderError(f"no report of {month:%Y-%m} kept for customer {customer_id}")
    return [
        (row.file_name("pdf"), "application/pdf", row.pdf),
        (row.file_name("csv"), "text/csv", row.csv),
    ]
