"""Monthly reports: the issued ones to download, the month so far, and who
gets the report mail. Customer users see their own customer's; staff choose
the customer (``?customer=``). Another customer's report is not found."""

from __future__ import annotations

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response as BaseResponse

from cloud.http import context as c
from cloud.models.ops import MonthlyReport
from cloud.ops.report_docs import report_csv, report_pdf
from cloud.ops.settings import OpsSettings
from cloud.services import reports as service
from cloud.services.errors import Invalid, NotFound
from cloud.services.scope import get_scoped

bp = Blueprint("reports", __name__, url_prefix="/reports")

FORMATS = {"pdf": "application/pdf", "csv": "text/csv; charset=utf-8"}


@bp.before_request
@login_required
def logged_in() -> None:
    """Every page here needs a login (any role)."""


def download(body: bytes, extension: str, name: str) -> Response:
    return Response(
        body,
        mimetype=FORMATS[extension],
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@bp.get("")
def index() -> str:
    viewer = c.viewer()
    customer = service.customer_of(c.db(), viewer, request.args.get("customer", type=int))
    return render_template(
        "reports/index.html",
        customer=customer,
        customers=[] if viewer.customer_id else service.customer_names(c.db()),
        issued=service.issued(c.db(), viewer, customer) if customer else [],
        this_month=c.now().astimezone(customer.zone if customer else c.zone()).date(),
    )


@bp.get("/<int:report_id>.<any(pdf, csv):extension>")
def issued(report_id: int, extension: str) -> Response:
    row = get_scoped(c.db(), c.viewer(), MonthlyReport, report_id)
    return download(getattr(row, extension), extension, row.file_name(extension))


@bp.get("/current.<any(pdf, csv):extension>")
def current(extension: str) -> Response:
    """The month in progress, computed now (not kept)."""
    customer = service.customer_of(c.db(), c.viewer(), request.args.get("customer", type=int))
    if customer is None:
        raise NotFound("customer (choose one)")
    ops = OpsSettings.load()
    report = service.so_far(
        c.db(),
        c.ctx().store,
        customer,
        now=c.now(),
        sample_interval_s=ops.report_sample_interval_s,
    )
    body = report_pdf(report, ops) if extension == "pdf" else report_csv(report)
    name = f"report-{report.month:%Y-%m}-{customer.id:06d}-so-far.{extension}"
    return download(body, extension, name)


@bp.post("/recipients")
def recipients() -> BaseResponse:
    viewer = c.viewer()
    customer = service.customer_of(c.db(), viewer, request.form.get("customer", type=int))
    if customer is None:
        raise NotFound("customer (choose one)")
    try:
        addresses = service.parse_recipients(request.form.get("recipients", ""))
        service.set_recipients(c.db(), viewer, customer, addresses, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("Report recipients saved."), "ok")
    chosen = None if viewer.customer_id else customer.id
    return redirect(url_for("reports.index", customer=chosen) + "#recipients")
