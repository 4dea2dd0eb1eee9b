"""The dashboard: the viewer's terminals at a glance."""

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
    customer_id = request.args.get("customer", type=int) if viewer.is_staff else None
    cards, pages = overview.cards(
        c.db(),
        c.ctx().store,
        viewer,
        c.now(),
        default_interval_s=c.ctx().web.default_sample_interval_s,
        customer_id=customer_id,
        page=request.args.get("page", 1, type=int),
    )
    notices = admin.current_announcements(c.db(), viewer.customer_id, c.now())
    customers = admin.customers(c.db()) if viewer.is_staff else []
    return render_template(
        "dashboard.html",
        cards=cards,
        pages=pages,
        notices=notices,
        customers=customers,
        customer_id=customer_id,
        page=request.args.get("page", 1, type=int),
    )
