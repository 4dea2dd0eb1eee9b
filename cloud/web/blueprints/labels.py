"""A terminal's channel names: display names, contact state names, key channels."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import Terminal
from cloud.services import labels
from cloud.services.errors import Invalid
from cloud.services.scope import get_scoped

bp = Blueprint("labels", __name__, url_prefix="/terminals")


def _page(terminal: Terminal, error: str | None = None, code: int = 200) -> tuple[str, int]:
    return render_template(
        "labels.html",
        terminal=terminal,
        labels=list(labels.for_terminal(c.db(), terminal.id).values()),
        max_key=labels.MAX_KEY,
        error=error,
    ), code


@bp.get("/<tid>/labels")
@login_required
def show(tid: str) -> tuple[str, int]:
    return _page(get_scoped(c.db(), c.viewer(), Terminal, tid))


@bp.post("/<tid>/labels")
@login_required
def save(tid: str) -> Response | tuple[str, int]:
    viewer = c.viewer()
    terminal = get_scoped(c.db(), viewer, Terminal, tid)
    form = request.form
    inputs = [
        labels.LabelInput(
            channel=name,
            display_name=form.get(f"name:{name}", ""),
            state_off=form.get(f"off:{name}", ""),
            state_on=form.get(f"on:{name}", ""),
            key=form.get(f"key:{name}") == "1",
        )
        for name in form.getlist("channel")
    ]
    try:
        n = labels.save(c.db(), viewer, terminal, inputs, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        return _page(terminal, c.message(err), 400)
    flash(_("Channel names saved.") if n else _("Nothing changed."), "ok")
    return redirect(url_for("labels.show", tid=terminal.id))
