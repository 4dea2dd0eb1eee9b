"""Invoices and measured availability for customer administrators and operators.

Invoices are issued by the scheduler (``cloud.ops.billing``); this blueprint
only shows them and serves their CSV and PDF. A customer sees its own
invoices; another customer's invoice id is simply not found.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, render_template
from flask_login import login_required

from cloud.http import context as c
from cloud.models import Customer
from cloud.models.ops import Invoice
from cloud.ops import availability as ops_availability
from cloud.ops.invoice_docs import invoice_csv, invoice_pdf
from cloud.ops.settings import COMPONENTS, OpsSettings
from cloud.services.scope import BILLING, get_scoped, require, scoped

bp = Blueprint("billing", __name__, url_prefix="/billing")


@bp.before_request
@login_required
def billing_roles() -> None:
    require(c.viewer(), BILLING)


@bp.get("")
def index() -> str:
    viewer = c.viewer()
    invoices = (
        c.db()
        .scalars(scoped(viewer, Invoice).order_by(Invoice.period.desc(), Invoice.customer_id))
        .all()
    )
    now = c.now()
    this_month = now.astimezone(c.zone()).date().replace(day=1)
    previous = (this_month - timedelta(days=1)).replace(day=1)
    # A customer's figure starts when the customer did, not before.
    customer = c.db().get(Customer, viewer.customer_id) if viewer.customer_id else None
    since = customer.created_at if customer is not None else None
    months = [
        ops_availability.monthly(c.db(), m, COMPONENTS, zone=c.zone(), now=now, since=since)
        for m in (this_month, previous)
    ]
    return render_template("billing/index.html", invoices=invoices, months=months)


def _invoice(invoice_id: int) -> Invoice:
    return get_scoped(c.db(), c.viewer(), Invoice, invoice_id)


def _download(body: bytes, mimetype: str, name: str) -> Response:
    return Response(
        body,
        mimetype=mimetype,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@bp.get("/invoices/<int:invoice_id>.csv")
def invoice_as_csv(invoice_id: int) -> Response:
    invoice = _invoice(invoice_id)
    return _download(invoice_csv(invoice), "text/csv; charset=utf-8", f"{invoice.number}.csv")


@bp.get("/invoices/<int:invoice_id>.pdf")
def invoice_as_pdf(invoice_id: int) -> Response:
    invoice = _invoice(invoice_id)
    body = invoice_pdf(invoice, OpsSettings.load(), c.zone())
    return _download(body, "application/pdf", f"{invoice.number}.pdf")
