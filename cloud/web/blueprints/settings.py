"""A terminal's settings: thresholds, delays, sampling, overrides; the config rollout."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import Terminal
from cloud.services import configs, labels, settings_form
from cloud.services.errors import Invalid, PublishError
from cloud.services.scope import CONFIGURE, get_scoped, require

bp = Blueprint("settings", __name__, url_prefix="/terminals")


def _page(terminal: Terminal, error: str | None = None, code: int = 200) -> tuple[str, int]:
    view = configs.current(c.db(), terminal)
    return render_template(
        "settings.html",
        terminal=terminal,
        view=view,
        channel_name=labels.names(c.db(), [terminal.id]),
        error=error,
        conds=configs.TERMINAL_CONDS,
        zone=c.zone(),
        now=c.now(),
    ), code


@bp.get("/<tid>/settings")
@login_required
def show(tid: str) -> tuple[str, int]:
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    return _page(terminal)


@bp.post("/<tid>/settings")
@login_required
def save(tid: str) -> Response | tuple[str, int]:
    viewer = c.viewer()
    terminal = get_scoped(c.db(), viewer, Terminal, tid)
    require(viewer, CONFIGURE)
    view = configs.current(c.db(), terminal)
    try:
        inp = settings_form.parse_form(
            request.form, [r.id for r in view.rules], [ch.name for ch in view.channels], c.zone()
        )
        version = configs.save(
            c.db(), viewer, terminal, inp, c.publisher(), now=c.now(), ip=c.client_ip()
        )
    except Invalid as err:
        c.db().rollback()
        return _page(terminal, c.message(err), 400)
    except PublishError:
        return _page(
            terminal,
            _(
                "The broker did not accept the configuration; nothing "
                "was changed. Please try again later."
            ),
            503,
        )
    if version is None:
        flash(_("Nothing changed: the terminal has this configuration already."), "ok")
    else:
        flash(_("Configuration %(v)s sent to the terminal.", v=version), "ok")
    return redirect(url_for("settings.show", tid=terminal.id))
