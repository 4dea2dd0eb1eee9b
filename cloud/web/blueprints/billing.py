"""Invoices and measured availability for customer administrators and operators.

Invoices are issued by the scheduler (``cloud.ops.billing``); this blueprint
shows them and serves their CSV and PDF, and shows what the month in
progress comes to so far (computed on the spot by the same rules, never
stored). A customer sees its own invoices; another customer's invoice id is
simply not found. Operators choose whose month they look at.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, Response, render_template, request
from flask_login import login_required

from cloud.http import context as c
from cloud.models import Customer
from cloud.models.ops import Invoice
from cloud.ops import availability as ops_availability
from cloud.ops import billing as ops_billing
from cloud.ops.errors import BillingError
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
    own = c.db().get(Customer, viewer.customer_id) if viewer.customer_id else None
    since = own.created_at if own is not None else None
    months = [
        ops_availability.monthly(c.db(), m, COMPONENTS, zone=c.zone(), now=now, since=since)
        for m in (this_month, previous)
    ]
    customers = [] if own else c.db().scalars(sa.select(Customer).order_by(Customer.name)).all()
    chosen_id = request.args.get("customer", type=int)
    chosen = own or (get_scoped(c.db(), viewer, Customer, chosen_id) if chosen_id else None)
    draft, problem = None, None
    if chosen is not None:
        try:
            draft = ops_billing.compute(c.db(), chosen, this_month, OpsSettings.load())
        except BillingError as err:
            problem = str(err)
    return render_template(
        "billing/index.html",
        invoices=invoices,
        months=months,
        draft=draft,
        problem=problem,
        customers=customers,
        chosen=chosen,
    )


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
