"""The customer administrator's users page: invite, change role, remove.

The rules (own customer only, nobody changes themself, audited) are in
:mod:`cloud.services.team`; this blueprint mails the invitations with the
site's invitation link (``/welcome/<token>``)."""

from __future__ import annotations

import logging

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import User
from cloud.services import team
from cloud.services.errors import Invalid, MailError
from cloud.services.scope import require
from cloud.web.blueprints.auth import send_invitation_mail
from cloud.web.templating import ROLE_LABELS

bp = Blueprint("team", __name__, url_prefix="/team")
log = logging.getLogger(__name__)


@bp.before_request
@login_required
def admins_only() -> None:
    require(c.viewer(), team.TEAM)


def _mail(user: User) -> None:
    try:
        send_invitation_mail(user)
    except MailError:
        log.exception("invitation mail to user %s failed", user.id)
        flash(_("The invitation mail failed; send it again later."), "error")
    else:
        flash(_("An invitation was mailed to %(email)s.", email=user.email), "ok")


@bp.route("", methods=["GET", "POST"])
def index() -> str | Response | tuple[str, int]:
    error = None
    if request.method == "POST":
        f = request.form
        try:
            user = team.invite(
                c.db(),
                c.viewer(),
                c.ctx().passwords,
                email=f.get("email", ""),
                name=f.get("name", ""),
                role=f.get("role", ""),
                language=f.get("language", "ja"),
                now=c.now(),
                ip=c.client_ip(),
            )
        except Invalid as err:
            c.db().rollback()
            error = c.message(err)
        else:
            _mail(user)
            return redirect(url_for("team.index"))
    return render_template(
        "team/index.html",
        members=team.members(c.db(), c.viewer()),
        roles=team.CUSTOMER_ROLES,
        me=c.viewer().user_id,
        error=error,
    ), 400 if error else 200


@bp.post("/<int:user_id>/role")
def role(user_id: int) -> Response:
    try:
        user = team.set_role(
            c.db(), c.viewer(), user_id, request.form.get("role", ""), now=c.now(), ip=c.client_ip()
        )
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("%(email)s is now %(role)s.", email=user.email, role=_role_label(user)), "ok")
    return redirect(url_for("team.index"))


@bp.post("/<int:user_id>/remove")
def remove(user_id: int) -> Response:
    try:
        user = team.remove(c.db(), c.viewer(), user_id, now=c.now(), ip=c.client_ip())
    except Invalid as err:
        c.db().rollback()
        flash(c.message(err), "error")
    else:
        flash(_("%(email)s was removed and can no longer log in.", email=user.email), "ok")
    return redirect(url_for("team.index"))


@bp.post("/<int:user_id>/invite")
def invite_again(user_id: int) -> Response:
    try:
        user = team.pending(c.db(), c.viewer(), user_id)
    except Invalid as err:
        flash(c.message(err), "error")
    else:
        _mail(user)
    return redirect(url_for("team.index"))


def _role_label(user: User) -> str:
    return str(ROLE_LABELS.get(str(user.role), user.role))
