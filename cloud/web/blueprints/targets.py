"""Notification targets: several addresses per customer, terminal and alarm kind."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import DeliveryChannel, NotificationTarget, Severity, Terminal
from cloud.services import admin, labels
from cloud.services import targets as service
from cloud.services.errors import Invalid, Throttled
from cloud.services.scope import get_scoped, scoped

bp = Blueprint("targets", __name__, url_prefix="/targets")


def _input() -> service.TargetInput:
    f = request.form
    return service.TargetInput(
        channel=f.get("channel", "email"),
        address=f.get("address", ""),
        terminal_id=f.get("terminal_id") or None,
        cond=f.get("cond") or None,
        channel_name=f.get("channel_name") or None,
        min_severity=f.get("min_severity", "warning"),
        language=f.get("language") or None,
        notify_recovery=bool(f.get("notify_recovery")),
        enabled=bool(f.get("enabled")),
    )


def _page(template: str, code: int = 200, **kw: object) -> tuple[str, int]:
    viewer = c.viewer()
    terminals = list(c.db().scalars(scoped(viewer, Terminal).order_by(Terminal.id)))
    return render_template(
        template,
        terminals=terminals,
        channel_labels=labels.for_terminals(c.db(), [t.id for t in terminals]),
        conds=service.CONDITIONS,
        severities=list(Severity),
        channels=list(DeliveryChannel),
        customers=admin.customers(c.db()) if viewer.is_staff else [],
        shown=service.shown_addresses(kw.get("targets", [])),  # type: ignore[arg-type]
        **kw,
    ), code


def _listing(code: int = 200, **kw: object) -> tuple[str, int]:
    rows = service.listing(c.db(), c.viewer())
    recent = {t.id: service.recent_deliveries(c.db(), t, 3) for t in rows}
    return _page("targets/index.html", code, targets=rows, recent=recent, **({"error": None} | kw))


@bp.get("")
@login_required
def index() -> tuple[str, int]:
    return _listing()


@bp.post("")
@login_required
def create() -> Response | tuple[str, int]:
    viewer = c.viewer()
    customer_id = (
        request.form.get("customer_id", type=int) if viewer.is_staff else viewer.customer_id
    )
    try:
        target = service.create(
            c.db(),
            viewer,
            customer_id or 0,
            _input(),
            addresses=c.ctx().addresses,
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        c.db().rollback()
        rows = service.listing(c.db(), viewer)
        return _page("targets/index.html", 400, targets=rows, recent={}, error=c.message(err))
    flash(_("Notification target added."), "ok")
    if target.channel == DeliveryChannel.WEBHOOK:
        # The secret is in this response only: not stored in the session, not shown again.
        return _listing(secret=target.hmac_secret, secret_for=target.id)
    return redirect(url_for("targets.index"))


@bp.post("/<int:target_id>/secret")
@login_required
def rotate(target_id: int) -> tuple[str, int]:
    target, secret = service.rotate_secret(
        c.db(), c.viewer(), target_id, now=c.now(), ip=c.client_ip()
    )
    return _listing(secret=secret, secret_for=target.id)


@bp.route("/<int:target_id>", methods=["GET", "POST"])
@login_required
def edit(target_id: int) -> Response | tuple[str, int]:
    viewer = c.viewer()
    target = get_scoped(c.db(), viewer, NotificationTarget, target_id)
    if request.method == "POST":
        try:
            service.update(
                c.db(),
                viewer,
                target_id,
                _input(),
                addresses=c.ctx().addresses,
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            return _page(
                "targets/edit.html",
                400,
                target=target,
                error=c.message(err),
                recent=service.recent_deliveries(c.db(), target),
            )
        flash(_("Notification target saved."), "ok")
        return redirect(url_for("targets.index"))
    return _page(
        "targets/edit.html",
        target=target,
        error=None,
        recent=service.recent_deliveries(c.db(), target),
    )


@bp.post("/<int:target_id>/delete")
@login_required
def delete(target_id: int) -> Response:
    service.delete(c.db(), c.viewer(), target_id, now=c.now(), ip=c.client_ip())
    flash(_("Notification target deleted."), "ok")
    return redirect(url_for("targets.index"))


@bp.post("/<int:target_id>/test")
@login_required
def test(target_id: int) -> Response | tuple[str, int, dict[str, str]]:
    try:
        service.send_test(c.db(), c.viewer(), target_id, now=c.now(), ip=c.client_ip())
    except Throttled as err:
        c.db().rollback()
        page, code = _listing(429, error=c.message(err))
        return page, code, {"Retry-After": str(err.retry_after)}
    flash(_("A test message was queued; it arrives within a minute or two."), "ok")
    return redirect(url_for("targets.index"))
