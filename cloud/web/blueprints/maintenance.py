"""Maintenance windows: mute a terminal, or some of its channels, for a while."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import Terminal
from cloud.services import admin, labels
from cloud.services import maintenance as service
from cloud.services.errors import Invalid
from cloud.services.scope import scoped
from cloud.web.forms import local_datetime

bp = Blueprint("maintenance", __name__, url_prefix="/maintenance")


def _page(code: int = 200, error: str | None = None) -> tuple[str, int]:
    viewer = c.viewer()
    terminals = list(c.db().scalars(scoped(viewer, Terminal).order_by(Terminal.id)))
    names = {t.id: t.name or t.id for t in terminals}
    return render_template(
        "maintenance/index.html",
        windows=service.listing(c.db(), viewer, now=c.now(), include_past=True),
        terminals=terminals,
        terminal_names=names,
        channel_labels=labels.for_terminals(c.db(), [t.id for t in terminals]),
        customers=admin.customers(c.db()) if viewer.is_staff else [],
        now=c.now(),
        error=error,
    ), code


@bp.get("")
@login_required
def index() -> tuple[str, int]:
    return _page()


@bp.post("")
@login_required
def create() -> Response | tuple[str, int]:
    viewer = c.viewer()
    f = request.form
    customer_id = f.get("customer_id", type=int) if viewer.is_staff else viewer.customer_id
    try:
        inp = service.WindowInput(
            starts_at=local_datetime("starts_at"),
            ends_at=local_datetime("ends_at"),
            terminal_id=f.get("terminal_id") or None,
            channels=tuple(x for x in f.getlist("channels") if x),
            reason=f.get("reason", ""),
        )
        service.create(c.db(), viewer, customer_id or 0, inp, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        return _page(400, c.message(err))
    flash(_("Maintenance window saved: alarms in it are recorded, not notified."), "ok")
    return redirect(url_for("maintenance.index"))


@bp.post("/<int:window_id>/end")
@login_required
def end(window_id: int) -> Response:
    ended = service.end(c.db(), c.viewer(), window_id, now=c.now(), ip=c.client_ip())
    flash(_("Maintenance window ended.") if ended else _("Maintenance window deleted."), "ok")
    return redirect(url_for("maintenance.index"))
