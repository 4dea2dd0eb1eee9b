"""Alarm history (filters), one alarm with its notification ledger, acknowledging."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import Alarm, AlarmState, Severity, Terminal
from cloud.services import alarms as service
from cloud.services import dates, labels, reports
from cloud.services.errors import Invalid
from cloud.services.scope import get_scoped, terminal_ids
from cloud.web.forms import AckForm

bp = Blueprint("alarms", __name__, url_prefix="/alarms")


def _day(name: str, shift: int = 0) -> datetime | None:
    raw = request.args.get(name, "")
    if not raw:
        return None
    day = dates.parse_day(raw, name) + timedelta(days=shift)
    return datetime.combine(day, time(), c.zone())


def _filter() -> service.AlarmFilter:
    return service.AlarmFilter(
        terminal_id=request.args.get("terminal") or None,
        state=request.args.get("state") or None,
        severity=request.args.get("severity") or None,
        cond=request.args.get("cond") or None,
        start=_day("from"),
        end=_day("to", shift=1),
        page=request.args.get("page", 1, type=int),
    )


@bp.get("")
@login_required
def index() -> str:
    f = _filter()
    result = service.search(c.db(), c.viewer(), f)
    return render_template(
        "alarms/index.html",
        result=result,
        channel_name=labels.names(c.db(), [t.id for _a, t in result.alarms]),
        f=f,
        args=request.args,
        terminals=terminal_ids(c.db(), c.viewer()),
        states=list(AlarmState),
        severities=list(Severity),
    )


@bp.get("/export.csv")
@login_required
def export() -> Response:
    """The alarm history with the list's filters, every page, as CSV."""
    body = reports.alarm_csv(
        c.db(), c.viewer(), _filter(), zone=c.zone(), language=c.user().language
    )
    stamp = c.now().astimezone(c.zone()).strftime("%Y%m%d-%H%M")
    return Response(
        body,
        mimetype="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="alarms-{stamp}.csv"',
            "Cache-Control": "private, no-store",
        },
    )


@bp.get("/<int:alarm_id>")
@login_required
def show(alarm_id: int) -> str:
    alarm = get_scoped(c.db(), c.viewer(), Alarm, alarm_id)
    terminal = c.db().get(Terminal, alarm.terminal_id)
    return render_template(
        "alarms/show.html",
        alarm=alarm,
        terminal=terminal,
        channel_name=labels.names(c.db(), [alarm.terminal_id]),
        detail=service.detail(c.db(), alarm, c.now()),
        zone=c.zone().key,
        ledger=service.ledger(c.db(), alarm),
        form=AckForm(),
    )


@bp.post("/<int:alarm_id>/ack")
@login_required
def acknowledge(alarm_id: int) -> Response:
    form = AckForm()
    # CSRFProtect has checked the token before this view runs.
    try:
        service.acknowledge(
            c.db(), c.viewer(), alarm_id, form.comment.data or "", now=c.now(), ip=c.client_ip()
        )
    except Invalid as err:
        flash(c.message(err), "error")
    else:
        flash(_("Alarm acknowledged."), "ok")
    return redirect(url_for("alarms.show", alarm_id=alarm_id))
