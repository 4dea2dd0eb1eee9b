"""The Flask app factory of the web role: the web site and the REST API.

``create_app(settings=None, **overrides)`` builds a complete app from
:class:`cloud.config.Settings` (``Settings.load()`` when None). Overrides:

- any :class:`cloud.http.settings.WebSettings` field (``secret_key=...``);
- collaborators: ``engine``, ``store``, ``publisher``, ``mailer``,
  ``clock`` (a function returning aware UTC now), ``addresses`` (the
  :class:`cloud.notify.netguard.AddressPolicy` webhook URLs are checked
  against; default: ``MIMAMORI_WEBHOOK_ALLOW``);
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

from flask import Flask, request
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from cloud import api
from cloud import db as cloud_db
from cloud import web as website
from cloud.app import health
from cloud.config import Settings
from cloud.http import context
from cloud.http.security import SecurityEvents
from cloud.http.settings import WebSettings, weak_secret
from cloud.models import utcnow
from cloud.notify.netguard import AddressPolicy
from cloud.notify.settings import NotifySettings
from cloud.services.mailer import SmtpMailer
from cloud.services.passwords import Passwords
from cloud.services.publisher import PahoPublisher
from cloud.services.throttle import ThrottlePolicy
from cloud.timeseries import make_store
from cloud.web.templating import select_locale

log = logging.getLogger(__name__)

_COLLABORATORS = ("engine", "store", "publisher", "mailer", "clock", "addresses")

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

    # The site's static files and templates live in cloud/web.
    app = Flask(website.__name__, static_folder="static", template_folder="templates")
    secret = web.secret_key
    if weak_secret(secret):  # development only: production refused it already
        log.warning("no real secret_key (MIMAMORI_SECRET_KEY): one for this process only")
        secret = secrets.token_urlsafe(32)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="mimamori_session",
        SESSION_COOKIE_SECURE=web.cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # Strict would drop the cookie on links from mail
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=web.session_idle_s),
        REMEMBER_COOKIE_SECURE=web.cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session, which expires itself
        MAX_CONTENT_LENGTH=1024 * 1024,
        BABEL_DEFAULT_LOCALE=settings.default_language,
        BABEL_DEFAULT_TIMEZONE="UTC",
        BABEL_TRANSLATION_DIRECTORIES=str(website.TRANSLATIONS),
    )
    app.config.update(flask_config)
    if web.trusted_proxies:
        n = web.trusted_proxies
        # Client address and scheme only: the host of links comes from
        # site_url, and a forwarded Host would let a request choose it.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0)  # type: ignore[method-assign]

    engine = collab.get("engine") or cloud_db.make_engine(
        settings.database_url, echo=settings.sql_echo
    )
    cloud_db.require_current(engine)
    store = collab.get("store") or make_store(settings, engine)
    clock: Callable[[], datetime] = collab.get("clock") or utcnow
    notify = NotifySettings.from_env()
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
            web.login_account_free_failures,
            web.login_account_base_delay_s,
            web.login_account_max_delay_s,
        ),
        clock=clock,
        addresses=collab.get("addresses") or AddressPolicy(notify.webhook_allow),
    )
    app.extensions["mimamori_publisher"] = collab.get("publisher") or PahoPublisher(
        web.mqtt_host,
        web.mqtt_port,
        web.mqtt_username,
        web.mqtt_password,
        tls_ca=web.mqtt_tls_ca,
        timeout_s=web.mqtt_timeout_s,
    )
    app.extensions["mimamori_mailer"] = collab.get("mailer") or SmtpMailer(notify)

    CSRFProtect(app)
    Babel(app, locale_selector=select_locale, timezone_selector=lambda: "UTC")
    website.register(app, Path(web.uplot_dir) if web.uplot_dir else None)
    api.register(app)  # after the site's error handlers, which it wraps
    health.register(app)
    app.after_request(_security_headers)
    SecurityEvents().install(app)
    app.teardown_appcontext(context.close_db)
    return app


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
