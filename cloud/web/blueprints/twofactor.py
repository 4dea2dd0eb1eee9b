"""Two-step login: the code page of a login, enrolment, recovery codes.

The rules live in :mod:`cloud.services.twofactor`; here are the pages and
the gate: a logged-in user whose role requires two factors and who has not
set them up reaches only the enrolment page (and logout, language, static
files) until they have.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import segno
from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import User
from cloud.services import accounts, twofactor
from cloud.services.errors import Invalid
from cloud.web.blueprints.auth import PENDING, complete_login, known_device
from cloud.web.forms import CodeForm, TwoFactorOffForm

bp = Blueprint("twofactor", __name__)

# How long the code page waits after the password before asking for it again.
PENDING_MAX_AGE = timedelta(minutes=5)
# What a user who must still enrol may reach besides the auth pages (login,
# logout, language, password, the links from mail).
_OPEN = frozenset({"twofactor.account", "twofactor.code", "static", "uplot"})
# API routes that look at the site's session (the others use bearer tokens only).
_API_SESSION = frozenset({"api.token_page", "api.create_token"})


@bp.before_app_request
def enrol_first() -> Response | None:
    endpoint = request.endpoint or ""
    if (
        endpoint in _OPEN
        or endpoint.startswith("auth.")
        or (endpoint.startswith("api.") and endpoint not in _API_SESSION)
    ):
        return None
    if not current_user.is_authenticated or not twofactor.must_enrol(c.user()):
        return None
    return redirect(url_for("twofactor.account"))


def _pending_user() -> tuple[User, str] | None:
    """The user half way through a login, and where the login goes next."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict):
        return None
    started = datetime.fromtimestamp(float(pending.get("at", 0)), UTC)
    if c.now() - started > PENDING_MAX_AGE:
        return None
    user = c.db().get(User, int(pending.get("u", 0)))
    if (
        user is None
        or not user.may_log_in
        or not user.two_factor
        or accounts.fingerprint(user.password_hash) != pending.get("f")
    ):
        return None
    return user, str(pending.get("next") or url_for("dashboard.index"))


@bp.route("/login/code", methods=["GET", "POST"])
def code() -> str | Response | tuple[str, int]:
    found = _pending_user()
    if found is None:
        session.pop(PENDING, None)
        flash(_("Please log in again."), "error")
        return redirect(url_for("auth.login"))
    user, target = found
    form = CodeForm()
    if form.validate_on_submit():
        try:
            twofactor.check_login(
                c.db(),
                c.ctx().throttle,
                user,
                form.code.data or "",
                ip=c.client_ip(),
                now=c.now(),
                known_device=known_device(user.email),
            )
        except twofactor.CodeRefused as err:
            form.code.errors = [c.message(err)]
            return render_template("auth/code.html", form=form), 401
        accounts.finish_login(c.db(), user, ip=c.client_ip(), now=c.now())
        return complete_login(user, target)
    return render_template("auth/code.html", form=form)


@bp.route("/account/two-factor", methods=["GET", "POST"])
@login_required
def account() -> str | tuple[str, int]:
    """Enrol (a QR code, the secret as text, a code to confirm), or, once on,
    new recovery codes and (where the role allows) turning it off."""
    user = c.user()
    if user.two_factor:
        return _status(user)
    form = CodeForm()
    secret = twofactor.pending_secret(c.db(), user)
    if form.validate_on_submit():
        try:
            codes = twofactor.confirm(
                c.db(), user, form.code.data or "", now=c.now(), ip=c.client_ip()
            )
        except Invalid as err:
            form.code.errors = [c.message(err)]
            return _enrol_page(user, secret, form), 400
        return render_template("auth/recovery_codes.html", codes=codes)
    return _enrol_page(user, secret, form)


def _enrol_page(user: User, secret: str, form: CodeForm) -> str:
    uri = twofactor.provisioning_uri(user, secret)
    return render_template(
        "auth/enrol.html",
        form=form,
        qr=segno.make(uri, error="m").svg_data_uri(scale=5, border=2),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        required=twofactor.required(user),
    )


def _status(user: User, form: CodeForm | None = None, off: TwoFactorOffForm | None = None) -> str:
    return render_template(
        "auth/two_factor.html",
        form=form or CodeForm(),
        off=off or TwoFactorOffForm(),
        left=twofactor.unused_recovery_codes(user),
        required=twofactor.required(user),
        since=user.totp_enabled_at,
    )


@bp.post("/account/two-factor/recovery-codes")
@login_required
def recovery_codes() -> str | tuple[str, int]:
    user = c.user()
    form = CodeForm()
    if not user.two_factor:
        return _status(user), 400
    if not form.validate_on_submit() or not _confirmed(user, form.code.data or ""):
        form.code.errors = [_("The code is wrong or was used already.")]
        return _status(user, form=form), 403
    codes = twofactor.new_recovery_codes(c.db(), user, now=c.now(), ip=c.client_ip())
    return render_template("auth/recovery_codes.html", codes=codes)


@bp.post("/account/two-factor/off")
@login_required
def turn_off() -> str | Response | tuple[str, int]:
    user = c.user()
    off = TwoFactorOffForm()
    if not user.two_factor or twofactor.required(user):
        return _status(user, off=off), 403
    if not off.validate_on_submit() or not c.ctx().passwords.verify(
        user.password_hash, off.password.data or ""
    ):
        off.password.errors = [_("The password is wrong.")]
        return _status(user, off=off), 403
    if not _confirmed(user, off.code.data or ""):
        off.code.errors = [_("The code is wrong or was used already.")]
        return _status(user, off=off), 403
    twofactor.disable(c.db(), c.viewer(), user, now=c.now(), ip=c.client_ip())
    flash(_("Two-step login is off."), "ok")
    return redirect(url_for("twofactor.account"))


def _confirmed(user: User, code: str) -> bool:
    """True if ``code`` is a good second factor of the logged-in ``user``
    (throttled and audited like a login's; a wait raises Throttled, a 429)."""
    try:
        twofactor.check_login(
            c.db(), c.ctx().throttle, user, code, ip=c.client_ip(), now=c.now(), known_device=True
        )
    except twofactor.CodeRefused:
        return False
    return True
