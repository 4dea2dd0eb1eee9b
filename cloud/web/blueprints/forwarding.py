"""Forwarding endpoints (customers' own servers) and their delivery status."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import ForwardingEndpoint, Terminal
from cloud.services import admin
from cloud.services import forwarding as service
from cloud.services.errors import Invalid
from cloud.services.scope import get_scoped, scoped

bp = Blueprint("forwarding", __name__, url_prefix="/forwarding")


def _file_input() -> service.FileInput:
    f = request.form
    return service.FileInput(
        host_key=f.get("host_key", ""),
        period=f.get("file_period", "daily"),
        scope=f.get("file_scope", "terminal"),
        timezone=f.get("file_timezone", "").strip() or c.zone().key,
    )


def _page(code: int = 200, **kw: object) -> tuple[str, int]:
    viewer = c.viewer()
    endpoints = service.listing(c.db(), viewer)
    return render_template(
        "forwarding/index.html",
        endpoints=endpoints,
        deliveries={e.id: service.deliveries(c.db(), e, 5) for e in endpoints},
        terminals=list(c.db().scalars(scoped(viewer, Terminal).order_by(Terminal.id))),
        customers=admin.customers(c.db()) if viewer.is_staff else [],
        zone=c.zone().key,
        **({"secret": None, "secret_for": None, "error": None} | kw),
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
        endpoint, secret = service.create(
            c.db(),
            viewer,
            customer_id or 0,
            name=f.get("name", ""),
            url=f.get("url", ""),
            terminal_id=f.get("terminal_id") or None,
            addresses=c.ctx().addresses,
            now=c.now(),
            ip=c.client_ip(),
            file=_file_input(),
        )
    except Invalid as err:
        c.db().rollback()
        return _page(400, error=c.message(err))
    if endpoint.kind == "sftp":
        flash(_("SFTP endpoint added: install its public key on your server."), "ok")
        return redirect(url_for("forwarding.show", endpoint_id=endpoint.id))
    # The secret is in this response only: not stored in the session, not shown again.
    return _page(secret=secret, secret_for=endpoint.id)


@bp.get("/<int:endpoint_id>")
@login_required
def show(endpoint_id: int) -> str:
    endpoint = get_scoped(c.db(), c.viewer(), ForwardingEndpoint, endpoint_id)
    return render_template(
        "forwarding/show.html",
        endpoint=endpoint,
        public_key=service.public_key(endpoint),
        fingerprint=service.host_key_fingerprint(endpoint),
        deliveries=service.deliveries(c.db(), endpoint, 50),
        terminals=list(
            c.db().scalars(
                scoped(c.viewer(), Terminal)
                .where(Terminal.customer_id == endpoint.customer_id)
                .order_by(Terminal.id)
            )
        ),
    )


@bp.post("/<int:endpoint_id>")
@login_required
def update(endpoint_id: int) -> Response | tuple[str, int]:
    f = request.form
    try:
        service.update(
            c.db(),
            c.viewer(),
            endpoint_id,
            name=f.get("name", ""),
            url=f.get("url", ""),
            terminal_id=f.get("terminal_id") or None,
            enabled=bool(f.get("enabled")),
            addresses=c.ctx().addresses,
            now=c.now(),
            ip=c.client_ip(),
            file=_file_input(),
        )
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("Forwarding endpoint saved."), "ok")
    return redirect(url_for("forwarding.show", endpoint_id=endpoint_id))


@bp.post("/<int:endpoint_id>/rotate")
@login_required
def rotate(endpoint_id: int) -> Response | tuple[str, int]:
    endpoint, secret = service.rotate_secret(
        c.db(), c.viewer(), endpoint_id, now=c.now(), ip=c.client_ip()
    )
    if endpoint.kind == "sftp":
        flash(_("New key made: install its public key on your server."), "ok")
        return redirect(url_for("forwarding.show", endpoint_id=endpoint.id))
    return _page(secret=secret, secret_for=endpoint.id)


@bp.post("/<int:endpoint_id>/delete")
@login_required
def delete(endpoint_id: int) -> Response:
    service.delete(c.db(), c.viewer(), endpoint_id, now=c.now(), ip=c.client_ip())
    flash(_("Forwarding endpoint deleted."), "ok")
    return redirect(url_for("forwarding.index"))
