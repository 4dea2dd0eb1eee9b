"""The dashboard: the viewer's fleet, worst first (:mod:`cloud.services.overview`)."""

from __future__ import annotations

from flask import Blueprint, render_template, request
from flask_login import login_required

from cloud.http import context as c
from cloud.services import admin, overview

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@login_required
def index() -> str:
    viewer = c.viewer()
    status = request.args.get("status", "")
    query = overview.Query(
        text=request.args.get("q", ""),
        status=overview.Status(status) if status in set(overview.Status) else None,
        customer_id=request.args.get("customer", type=int) if viewer.is_staff else None,
        page=request.args.get("page", 1, type=int),
    )
    fleet = overview.fleet(
        c.db(),
        c.ctx().store,
        viewer,
        c.now(),
        query,
        default_interval_s=c.ctx().web.default_sample_interval_s,
    )
    args = {
        k: v
        for k, v in (
            ("q", query.text),
            ("status", query.status and str(query.status)),
            ("customer", query.customer_id),
        )
        if v
    }
    return render_template(
        "dashboard.html",
        fleet=fleet,
        query=query,
        args=args,
        unfiltered={k: v for k, v in args.items() if k != "status"},
        statuses=overview.RANKED,
        notices=admin.current_announcements(c.db(), viewer.customer_id, c.now()),
        customers=admin.customers(c.db()) if viewer.is_staff else [],
    )
