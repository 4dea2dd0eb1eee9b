"""Firmware updates over the air: upload bundles, start rollouts, watch them
(operators only; docs/ota.md). Thin over :mod:`cloud.services.ota`."""

from __future__ import annotations

import re

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models.ota import RUNNING
from cloud.services import admin, ota
from cloud.services.errors import N_, Invalid

bp = Blueprint("ota", __name__, url_prefix="/ota")
REFRESH_S = 5  # the rollout page reloads itself this often while it runs


def _index(code: int = 200, error: str | None = None) -> tuple[str, int]:
    viewer = c.viewer()
    return render_template(
        "ota/index.html",
        bundles=ota.bundles(c.db(), viewer),
        rollouts=ota.rollouts(c.db(), viewer),
        customers=admin.customers(c.db()),
        keys=c.ctx().web.ota_keys,
        defaults={
            "waves": ota.DEFAULT_WAVES,
            "threshold_pct": ota.DEFAULT_THRESHOLD_PCT,
            "confirm_s": ota.DEFAULT_CONFIRM_S,
        },
        limit=ota.MAX_BUNDLE_BYTES,
        error=error,
    ), code


@bp.get("")
@login_required
def index() -> tuple[str, int]:
    return _index()


@bp.post("/bundles")
@login_required
def upload() -> Response | tuple[str, int]:
    viewer = c.viewer()
    archive = request.files.get("archive")
    try:
        if archive is None or not archive.filename:
            raise Invalid(N_("Choose the .tar file made by mimamori-install sign."))
        bundle = ota.upload_bundle(
            c.db(),
            viewer,
            archive.read(ota.MAX_ARCHIVE_BYTES + 1),
            trusted_keys=list(c.ctx().web.ota_keys),
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        c.db().rollback()
        return _index(400, c.message(err))
    flash(_("Bundle %(version)s uploaded.", version=bundle.version), "ok")
    return redirect(url_for("ota.index"))


@bp.post("/rollouts")
@login_required
def start() -> Response | tuple[str, int]:
    f = request.form
    ids = [t for t in re.split(r"[\s,]+", f.get("terminals", "")) if t]
    try:
        rollout = ota.start_rollout(
            c.db(),
            c.viewer(),
            bundle_pk=f.get("bundle", type=int) or 0,
            terminal_ids=ids or None,
            customer_id=f.get("customer_id", type=int) if not ids else None,
            waves=f.get("waves", ota.DEFAULT_WAVES),
            threshold_pct=f.get("threshold_pct", ota.DEFAULT_THRESHOLD_PCT, type=int),
            confirm_s=f.get("confirm_s", ota.DEFAULT_CONFIRM_S, type=int),
            now=c.now(),
            ip=c.client_ip(),
        )
    except Invalid as err:
        c.db().rollback()
        return _index(400, c.message(err))
    flash(_("Rollout started."), "ok")
    return redirect(url_for("ota.rollout", rollout_id=rollout.id))


@bp.get("/rollouts/<int:rollout_id>")
@login_required
def rollout(rollout_id: int) -> str:
    r, bundle, targets = ota.rollout_detail(c.db(), c.viewer(), rollout_id)
    return render_template(
        "ota/rollout.html",
        rollout=r,
        bundle=bundle,
        targets=targets,
        counts=ota.counts(targets),
        refresh=REFRESH_S if r.state == RUNNING else None,
    )


@bp.post("/rollouts/<int:rollout_id>/<any(pause, resume, cancel):action>")
@login_required
def act(rollout_id: int, action: str) -> Response:
    try:
        ota.set_state(
            c.db(),
            c.viewer(),
            rollout_id,
            action,
            now=c.now(),
            ip=c.client_ip(),
            publisher=c.publisher(),
        )
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    return redirect(url_for("ota.rollout", rollout_id=rollout_id))
