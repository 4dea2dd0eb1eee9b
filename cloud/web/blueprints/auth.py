"""Login, logout, password change and reset, invitations, language choice."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.wrappers import Response

from cloud.http import context as c
from cloud.models import User
from cloud.services import accounts, audit, throttle
from cloud.services.errors import Invalid, MailError, TokenInvalid
from cloud.web.forms import LoginForm, PasswordChangeForm, ResetForm, ResetRequestForm
from cloud.web.resetmail import ResetMails

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: an open redirect would make phishing links look ours."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not urlsplit(target).netloc
        and "\\" not in target
    ):
        return target
    return url_for("dashboard.index")


# A browser that logged in to an account before carries this signed cookie
# naming the account (a digest of the login name); such a browser is not held
# up by the per-account login limit (cloud.services.throttle, rule 3), so an
# attacker's guesses from elsewhere cannot lock the owner out.
DEVICE_COOKIE = "mimamori_device"
_DEVICE_SALT = "mimamori.device"
DEVICE_COOKIE_AGE_S = 365 * 86400


def _device_keys() -> list[str]:
    """The accounts (login-name digests) this browser logged in to before."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return []
    try:
        loaded = URLSafeSerializer(c.secret_key(), salt=_DEVICE_SALT).loads(raw)
    except BadSignature:
        return []
    return [k for k in loaded if isinstance(k, str)] if isinstance(loaded, list) else []


def known_device(email: str) -> bool:
    return throttle.login_key(email) in _device_keys()


def _remember_device(response: Response, email: str) -> None:
    key = throttle.login_key(email)
    keys = [key, *[k for k in _device_keys() if k != key][:4]]  # a few accounts per browser
    response.set_cookie(
        DEVICE_COOKIE,
        URLSafeSerializer(c.secret_key(), salt=_DEVICE_SALT).dumps(keys),
        max_age=DEVICE_COOKIE_AGE_S,
        secure=c.ctx().web.cookie_secure,
        httponly=True,
        samesite="Lax",
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data or ""
        try:
            user = accounts.authenticate(
                c.db(),
                c.ctx().passwords,
                c.ctx().throttle,
                email,
                form.password.data or "",
                ip=c.client_ip(),
                now=c.now(),
                known_device=known_device(email),
            )
        except accounts.LoginFailed:
            form.password.errors = [_("Wrong e-mail address or password.")]
            return render_template("auth/login.html", form=form), 401
        if user.two_factor:
            # Half way: the code page finishes the login (cloud.web.blueprints.twofactor).
            session.clear()
            session[PENDING] = {
                "u": user.id,
                "f": accounts.fingerprint(user.password_hash),
                "at": c.now().timestamp(),
                "next": _safe_next(request.args.get("next")),
            }
            return redirect(url_for("twofactor.code"))
        return complete_login(user, _safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


# The session key of a login whose password was right and whose second
# factor is still to come: user id, password fingerprint, when, where to go.
PENDING = "pending_login"


def complete_login(user: User, target: str) -> Response:
    """Log ``user`` in (every factor checked) and send the browser to ``target``."""
    # A fresh session on login, so a planted session id is worthless.
    session.clear()
    login_user(c.SessionUser(user, accounts.start_session(c.db(), user, c.now())))
    session.permanent = True
    response = redirect(target)
    _remember_device(response, user.email)
    return response


@bp.post("/logout")
@login_required
def logout() -> Response:
    accounts.record_logout(c.db(), c.user(), ip=c.client_ip(), now=c.now())
    # Ended on the server: a copy of the cookie is worthless from now on.
    accounts.end_session(c.db(), current_user.get_id(), c.now())
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def password() -> str | Response:
    form = PasswordChangeForm()
    if form.validate_on_submit():
        user = c.user()
        try:
            accounts.change_password(
                c.db(),
                c.ctx().passwords,
                user,
                form.current.data or "",
                form.new.data or "",
                ip=c.client_ip(),
                now=c.now(),
            )
        except Invalid as err:
            form.new.errors = [c.message(err)]
            return render_template("auth/password.html", form=form)
        # The session id carries the password fingerprint: renew ours.
        accounts.end_session(c.db(), current_user.get_id(), c.now())
        login_user(c.SessionUser(user, accounts.start_session(c.db(), user, c.now())))
        flash(_("Your password was changed."), "ok")
        return redirect(url_for("dashboard.index"))
    return render_template("auth/password.html", form=form)


@bp.route("/password/reset", methods=["GET", "POST"])
def reset_request() -> str:
    form = ResetRequestForm()
    sent = False
    if form.validate_on_submit():
        email = form.email.data or ""
        db, now, ip = c.db(), c.now(), c.client_ip()
        user = accounts.find_user(db, email)
        allowed = accounts.reset_allowed(db, email, ip, now)
        accounts.record_reset_request(db, email, user, ip=ip, now=now)
        # The same work and the same answer whether or not the address has an
        # account: the mail is made and sent off the request (cloud.web.resetmail).
        wanted = user is not None and user.may_log_in and allowed
        queue_reset_mail(user.id if wanted and user is not None else None)
        sent = True
    return render_template("auth/reset_request.html", form=form, sent=sent)


def _base() -> str:
    """Scheme and host of the links in mail."""
    web = c.ctx().web
    return (web.site_url or request.host_url).rstrip("/")


def _link(endpoint: str, token: str) -> str:
    return _base() + url_for(endpoint, token=token)


def queue_reset_mail(user_id: int | None) -> None:
    """Send a reset link to ``user_id`` from the background (None: nothing,
    at the same cost to the request)."""
    mails: ResetMails = current_app.extensions["mimamori_reset_mails"]
    base = _base()
    mails.submit(None if user_id is None else lambda: send_reset_mail(user_id, base))


def send_reset_mail(user_id: int, base: str) -> None:
    """Make a reset link for ``user_id`` and mail it (in an app context)."""
    web = c.ctx().web
    with c.ctx().sessions() as db:
        user = db.get(User, user_id)
        if user is None or not user.may_log_in:
            return
        token = accounts.make_reset_token(c.secret_key(), user, c.now())
        email, language = user.email, user.language
    with current_app.test_request_context():
        link = base + url_for("auth.reset", token=token)
    minutes = web.reset_token_max_age_s // 60
    with force_locale(language):
        subject = _("mimamori: password reset")
        body = _(
            "Someone asked to reset the password of %(email)s.\n\n"
            "To choose a new password, open this link within %(minutes)s minutes:\n"
            "%(link)s\n\n"
            "If it was not you, ignore this mail; your password stays as it is.\n",
            email=email,
            minutes=minutes,
            link=link,
        )
    try:
        c.mailer().send(email, subject, body)
    except MailError:
        # Logged, not shown: the page must not tell whether the account exists.
        log.exception("password reset mail to user %s failed", user_id)


def send_invitation_mail(user: User) -> None:
    """Invite a new user to choose a first password (not a reset: nobody
    asked for one). Raises :class:`MailError` if the server refuses it."""
    web = c.ctx().web
    token = accounts.make_reset_token(c.secret_key(), user, c.now(), invitation=True)
    link = _link("auth.invitation", token)
    with force_locale(user.language):
        subject = _("mimamori: your new account")
        body = _(
            "An account on mimamori was created for you (%(email)s).\n\n"
            "To start, choose your password with this link within %(days)s days:\n"
            "%(link)s\n\n"
            "Then log in with %(email)s and that password.\n"
            "If you did not expect this mail, ignore it: the account stays unusable "
            "without the link.\n",
            email=user.email,
            days=web.invitation_max_age_s // 86400,
            link=link,
        )
    c.mailer().send(user.email, subject, body)


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> str | Response | tuple[str, int]:
    return _choose_password(token, invitation=False)


@bp.route("/welcome/<token>", methods=["GET", "POST"])
def invitation(token: str) -> str | Response | tuple[str, int]:
    return _choose_password(token, invitation=True)


def _choose_password(token: str, invitation: bool) -> str | Response | tuple[str, int]:
    web = c.ctx().web
    secret = c.secret_key()
    max_age = web.invitation_max_age_s if invitation else web.reset_token_max_age_s

    def page(form: ResetForm | None, invalid: bool) -> str:
        return render_template("auth/reset.html", form=form, invalid=invalid, invitation=invitation)

    try:
        accounts.user_for_token(c.db(), secret, token, max_age, c.now(), invitation=invitation)
    except TokenInvalid:
        return page(None, invalid=True), 400
    form = ResetForm()
    if form.validate_on_submit():
        try:
            accounts.reset_password(
                c.db(),
                c.ctx().passwords,
                secret,
                token,
                form.new.data or "",
                max_age_s=max_age,
                ip=c.client_ip(),
                now=c.now(),
                invitation=invitation,
            )
        except Invalid as err:
            form.new.errors = [c.message(err)]
            return page(form, invalid=False)
        flash(_("Your password was changed. Please log in."), "ok")
        return redirect(url_for("auth.login"))
    return page(form, invalid=False)


@bp.post("/language")
def language() -> Response:
    lang = request.form.get("lang", "")
    if lang in ("ja", "en"):
        session["lang"] = lang
        if current_user.is_authenticated:
            user = c.user()
            if user.language != lang:
                user.language = lang
                audit.record(
                    c.db(),
                    c.viewer(),
                    "user.language",
                    "user",
                    user.id,
                    at=c.now(),
                    ip=c.client_ip(),
                    details={"language": lang},
                )
                c.db().commit()
    return redirect(_safe_next(request.form.get("next")))
