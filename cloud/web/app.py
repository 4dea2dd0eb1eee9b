"""The Flask app factory of the web role.

``create_app(settings=None, **overrides)`` builds a complete site from
:class:`cloud.config.Settings` (``Settings.load()`` when None). Overrides:

- any :class:`cloud.web.settings.WebSettings` field (``secret_key=...``);
- collaborators: ``engine``, ``store``, ``publisher``, ``mailer``,
  ``clock`` (a function returning aware UTC now);
- upper-case names: Flask config values (``TESTING=True``).

Anything else is a ``TypeError``, so a misspelt override fails loudly.
The database must be migrated to the shipped head (checked here).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, render_template, request, send_from_directory
from flask_babel import Babel
from flask_babel import gettext as _
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from cloud import api
from cloud import db as cloud_db
from cloud.config import Settings
from cloud.models import utcnow
from cloud.notify.settings import NotifySettings
from cloud.timeseries import make_store
from cloud.web import context, health, templating
from cloud.web.blueprints import (
    admin,
    alarms,
    auth,
    billing,
    dashboard,
    forwarding,
    targets,
    terminals,
)
from cloud.web.blueprints import settings as settings_bp
from cloud.web.errors import Forbidden, Invalid, NotFound, Throttled
from cloud.web.mailer import SmtpMailer
from cloud.web.publisher import PahoPublisher
from cloud.web.services import accounts
from cloud.web.services.passwords import Passwords
from cloud.web.services.throttle import ThrottlePolicy
from cloud.web.settings import WebSettings
from cloud.web.templating import select_locale

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
# uPlot files the site serves straight from the npm package.
UPLOT_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
_COLLABORATORS = ("engine", "store", "publisher", "mailer", "clock")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the web app (see the module docstring for ``overrides``)."""
    settings = settings or Settings.load()
    web_fields = WebSettings.field_names()
    web_over = {k: v for k, v in overrides.items() if k in web_fields}
    collab = {k: v for k, v in overrides.items() if k in _COLLABORATORS}
    flask_config = {k: v for k, v in overrides.items() if k.isupper()}
    unknown = set(overrides) - set(web_over) - set(collab) - set(flask_config)
    if unknown:
        raise TypeError(f"create_app: unknown overrides {sorted(unknown)}")
    web = WebSettings.from_env(**web_over)

    app = Flask(__name__, static_folder="static", template_folder="templates")
    secret = web.secret_key
    if not secret:
        log.warning("no secret_key set (MIMAMORI_SECRET_KEY): sessions end with this process")
        secret = secrets.token_urlsafe(32)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="mimamori_session",
        SESSION_COOKIE_SECURE=web.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # Strict would drop the cookie on links from mail
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        REMEMBER_COOKIE_SECURE=web.cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session, which expires itself
        MAX_CONTENT_LENGTH=1024 * 1024,
        BABEL_DEFAULT_LOCALE=settings.default_language,
        BABEL_DEFAULT_TIMEZONE="UTC",
        BABEL_TRANSLATION_DIRECTORIES=str(HERE / "translations"),
    )
    app.config.update(flask_config)
    if web.trusted_proxies:
        n = web.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    engine = collab.get("engine") or cloud_db.make_engine(
        settings.database_url, echo=settings.sql_echo
    )
    cloud_db.require_current(engine)
    store = collab.get("store") or make_store(settings, engine)
    clock: Callable[[], datetime] = collab.get("clock") or utcnow
    app.extensions["mimamori"] = context.WebContext(
        settings=settings,
        web=web,
        engine=engine,
        sessions=cloud_db.session_factory(engine),
        store=store,
        passwords=Passwords(
            web.argon2_time_cost,
            web.argon2_memory_kib,
            web.argon2_parallelism,
            web.password_min_length,
        ),
        throttle=ThrottlePolicy(
            web.login_free_failures,
            web.login_base_delay_s,
            web.login_max_delay_s,
            web.login_ip_window_s,
            web.login_ip_max_failures,
        ),
        clock=clock,
    )
    app.extensions["mimamori_publisher"] = collab.get("publisher") or PahoPublisher(
        web.mqtt_host,
        web.mqtt_port,
        web.mqtt_username,
        web.mqtt_password,
        tls_ca=web.mqtt_tls_ca,
        timeout_s=web.mqtt_timeout_s,
    )
    app.extensions["mimamori_mailer"] = collab.get("mailer") or SmtpMailer(
        NotifySettings.from_env()
    )

    CSRFProtect(app)
    _init_login(app)
    Babel(app, locale_selector=select_locale, timezone_selector=lambda: "UTC")
    _register_blueprints(app)
    _register_error_handlers(app)
    templating.register(app)
    _register_vendor_route(
        app, Path(web.uplot_dir) if web.uplot_dir else REPO_ROOT / "node_modules" / "uplot" / "dist"
    )
    _register_health_route(app)
    api.register(app)  # after the site's error handlers, which it wraps
    health.register(app)
    app.after_request(_security_headers)
    app.teardown_appcontext(context.close_db)
    return app


# -- login and language --------------------------------------------------------


def _init_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.login_message = ""  # the login page says what to do
    manager.session_protection = "basic"  # "strong" logs phones out on every IP change

    @manager.user_loader
    def load(value: str) -> context.SessionUser | None:
        user = accounts.user_for_session(context.db(), value)
        return None if user is None else context.SessionUser(user, value)


# -- responses -----------------------------------------------------------------


def _security_headers(response: Response) -> Response:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "same-origin")
    h.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    max_age = context.ctx().web.hsts_max_age_s
    if request.is_secure and max_age:
        h.setdefault("Strict-Transport-Security", f"max-age={max_age}; includeSubDomains")
    if response.mimetype == "text/html" or (request.endpoint and "export" in request.endpoint):
        # Pages hold customer data: never keep them in shared caches.
        h.setdefault("Cache-Control", "no-store")
    return response


def _register_error_handlers(app: Flask) -> None:
    def page(code: int, message: str) -> tuple[str, int]:
        return render_template("error.html", code=code, message=message), code

    @app.errorhandler(NotFound)
    @app.errorhandler(404)
    def not_found(_err: Exception) -> tuple[str, int]:
        return page(404, _("Not found."))

    @app.errorhandler(Forbidden)
    @app.errorhandler(403)
    def forbidden(_err: Exception) -> tuple[str, int]:
        return page(403, _("You may not do this."))

    @app.errorhandler(CSRFError)
    def csrf(_err: CSRFError) -> tuple[str, int]:
        return page(400, _("The form expired or was not sent from this site. Please try again."))

    @app.errorhandler(Throttled)
    def throttled(err: Throttled) -> tuple[str, int, dict[str, str]]:
        body, code = page(
            429, _("Too many attempts. Try again in %(s)s seconds.", s=err.retry_after)
        )
        return body, code, {"Retry-After": str(err.retry_after)}

    @app.errorhandler(Invalid)
    def invalid(err: Invalid) -> tuple[str, int]:
        return page(400, context.message(err))


def _register_blueprints(app: Flask) -> None:
    for bp in (
        auth.bp,
        dashboard.bp,
        terminals.bp,
        alarms.bp,
        settings_bp.bp,
        targets.bp,
        forwarding.bp,
        admin.bp,
        billing.bp,
    ):
        app.register_blueprint(bp)


def _register_vendor_route(app: Flask, directory: Path) -> None:
    if not (directory / UPLOT_FILES[0]).is_file():
        log.warning("uPlot not found in %s (run npm install): graphs will not draw", directory)

    @app.get("/vendor/uplot/<name>")
    def uplot(name: str) -> Response:
        if name not in UPLOT_FILES:
            abort(404)
        return send_from_directory(directory, name, max_age=86400)


def _register_health_route(app: Flask) -> None:
    @app.get("/healthz")
    def healthz() -> tuple[dict[str, str], int]:
        """For the availability checker and load balancers: 200 when this process
        can reach the database, 503 otherwise. No login, no data."""
        try:
            context.db().execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            log.exception("health check: database unreachable")
            return {"status": "database unreachable"}, 503
        return {"status": "ok"}, 200
