"""A terminal's page: live values, graphs (uPlot), graph data JSON, CSV export."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response as WerkzeugResponse

from cloud.http import context as c
from cloud.models import Alarm, AlarmState, Channel, Terminal
from cloud.models.commands import DELIVERED, QUEUED
from cloud.services import commands, configs, dates, labels, overview, sensors, series
from cloud.services.errors import N_, Invalid, NotFound
from cloud.services.scope import get_scoped

bp = Blueprint("terminals", __name__, url_prefix="/terminals")


def _channel(terminal: Terminal, name: str) -> Channel:
    """The newest declaration of channel ``name`` (retired ones keep old graphs readable)."""
    row = (
        c.db()
        .scalars(
            sa.select(Channel)
            .where(Channel.terminal_id == terminal.id, Channel.name == name)
            .order_by(Channel.retired_at.is_not(None), Channel.declared_at.desc())
            .limit(1)
        )
        .first()
    )
    if row is None:
        raise NotFound(f"channel {name!r}")
    return row


@bp.get("/<tid>")
@login_required
def show(tid: str) -> str:
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    latest = c.ctx().store.latest(terminal.id)
    open_alarms = list(
        c.db().scalars(
            sa.select(Alarm)
            .where(Alarm.terminal_id == terminal.id, Alarm.state != AlarmState.CLEARED)
            .order_by(Alarm.raised_at.desc())
        )
    )
    done = overview.completeness(
        c.db(), terminal, c.now(), days=7, default_interval_s=c.ctx().web.default_sample_interval_s
    )
    today = c.now().astimezone(c.zone()).date()
    named = labels.for_terminal(c.db(), terminal.id)
    channels = list(terminal.channels)
    return render_template(
        "terminal.html",
        terminal=terminal,
        channels=channels,
        sensors=sensors.of_terminal(terminal, (ch.name for ch in channels)),
        labels=named,
        graph_channels=[lb.channel for lb in labels.key_channels(list(named.values()))],
        latest=latest,
        open_alarms=open_alarms,
        completeness=done,
        zone=c.zone().key,
        export_start=today - timedelta(days=1),
        export_end=today,
        settings=configs.current(c.db(), terminal),
        sendable=commands.may_send(c.viewer()),
        **_command_context(terminal.id),
    )


def _command_context(tid: str) -> dict[str, object]:
    now = c.now()
    recent = commands.recent(c.db(), c.viewer(), tid, limit=10)
    return {
        "commands": recent,
        "commands_pending": any(cmd.state_at(now) in (QUEUED, DELIVERED) for cmd in recent),
        "now": now,
    }


@bp.get("/<tid>/commands")
@login_required
def command_list(tid: str) -> str:
    """The recent commands as an HTML fragment (app.js refreshes it while one is pending)."""
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    return render_template("_commands.html", terminal=terminal, **_command_context(terminal.id))


@bp.post("/<tid>/commands")
@login_required
def send_command(tid: str) -> WerkzeugResponse:
    try:
        cmd = commands.send(
            c.db(),
            c.viewer(),
            tid,
            request.form.get("name", ""),
            publisher=c.publisher(),
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        if cmd.error:
            flash(_("The command could not be sent: the broker did not take it."), "error")
        else:
            flash(_("Command sent."), "ok")
    return redirect(url_for("terminals.show", tid=tid) + "#commands")


@bp.get("/<tid>/latest.json")
@login_required
def latest(tid: str) -> Response:
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    points = c.ctx().store.latest(terminal.id)
    return jsonify(
        {
            "terminal": terminal.id,
            "connectivity": str(terminal.connectivity),
            "values": {
                name: {"ts": p.ts, "value": p.value, "quality": p.quality}
                for name, p in points.items()
            },
        }
    )


@bp.get("/<tid>/series.json")
@login_required
def series_json(tid: str) -> Response:
    """Graph data of one channel: ``?channel=&start=&end=`` (epoch seconds) and
    optionally ``points`` (at most the site's limit)."""
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    channel = _channel(terminal, request.args.get("channel", ""))
    now = int(c.now().timestamp())
    end = request.args.get("end", now, type=int)
    start = request.args.get("start", end - 86400, type=int)
    limit = c.ctx().web.graph_max_points
    points = max(10, min(limit, request.args.get("points", limit, type=int)))
    if not 0 <= start < end:
        raise Invalid(N_("The range ends before it starts."))
    data = series.graph_data(
        c.ctx().store, terminal.id, channel, start, end, max_points=points, zone=c.zone()
    )
    data.update(series.graph_marks(c.db(), terminal.id, channel.name, start, end, now=c.now()))
    lb = labels.for_terminal(c.db(), terminal.id).get(channel.name)
    data["label"] = lb.name if lb else channel.name
    if lb and lb.is_contact:
        data["states"] = [lb.state_off or _("off"), lb.state_on or _("on")]
    response = jsonify(data)
    response.headers["Cache-Control"] = "private, max-age=0"
    return response


@bp.get("/<tid>/export.csv")
@login_required
def export(tid: str) -> Response:
    """Raw samples as CSV: ``?start=&end=`` local dates (inclusive), ``channel``
    (repeatable; none: all current channels), ``tz`` (default: the viewer's zone)."""
    terminal = get_scoped(c.db(), c.viewer(), Terminal, tid)
    try:
        zone = ZoneInfo(request.args.get("tz") or c.zone().key)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise Invalid(N_("Unknown time zone.")) from err
    first = dates.parse_day(request.args.get("start", ""), "start")
    last = dates.parse_day(request.args.get("end", ""), "end")
    names = request.args.getlist("channel")
    channels = [_channel(terminal, n) for n in names] if names else list(terminal.channels)
    start = datetime.combine(first, time(), zone)
    end = datetime.combine(last + timedelta(days=1), time(), zone)
    rows = series.csv_rows(
        c.ctx().store,
        terminal.id,
        channels,
        start=start,
        end=end,
        zone=zone,
        max_days=c.ctx().web.export_max_days,
        names=labels.for_terminal(c.db(), terminal.id),
    )
    filename = f"{terminal.id}_{first:%Y%m%d}-{last:%Y%m%d}.csv"
    return Response(
        stream_with_context(rows),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
