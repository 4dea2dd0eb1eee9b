"""The web site for customers, installers and operators: pages over :mod:`cloud.services`.

:func:`register` mounts the site on the app :func:`cloud.app.create_app`
builds (the REST API, :mod:`cloud.api`, is its sibling on the same app):
login, the blueprints, the error pages, template filters and the uPlot files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, abort, render_template, send_from_directory
from flask_babel import gettext as _
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError
from werkzeug.wrappers import Response

from cloud.http import context, security
from cloud.services import accounts
from cloud.services.errors import Forbidden, Invalid, NotFound, Throttled
from cloud.web import templating
from cloud.web.blueprints import (
    admin,
    alarms,
    auth,
    billing,
    dashboard,
    forwarding,
    labels,
    maintenance,
    ota,
    reports,
    targets,
    team,
    terminals,
    twofactor,
)
from cloud.web.blueprints import settings as settings_bp
from cloud.web.resetmail import ResetMails

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TRANSLATIONS = HERE / "translations"
REPO_ROOT = HERE.parents[1]
# uPlot files the site serves straight from the npm package.
UPLOT_FILES = ("uPlot.iife.min.js", "uPlot.min.css")


def register(app: Flask, uplot_dir: Path | None = None) -> None:
    """Mount the site on ``app``; ``uplot_dir`` defaults to the npm package's ``dist``."""
    _init_login(app)
    app.extensions["mimamori_reset_mails"] = ResetMails(app)
    _register_blueprints(app)
    _register_error_handlers(app)
    templating.register(app)
    _register_vendor_route(app, uplot_dir or REPO_ROOT / "node_modules" / "uplot" / "dist")


# -- login and language --------------------------------------------------------


def _init_login(app: Flask) -> None:
    manager = LoginManager(app)
    manager.login_view = "auth.login"
    manager.login_message = ""  # the login page says what to do
    manager.session_protection = "basic"  # "strong" logs phones out on every IP change

    @manager.user_loader
    def load(value: str) -> context.SessionUser | None:
        web = context.ctx().web
        user = accounts.user_for_session(
            context.db(),
            value,
            context.now(),
            absolute_s=web.session_absolute_s,
            idle_s=web.session_idle_s,
        )
        return None if user is None else context.SessionUser(user, value)


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
        security.mark("csrf")
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
        twofactor.bp,
        dashboard.bp,
        terminals.bp,
        alarms.bp,
        settings_bp.bp,
        labels.bp,
        targets.bp,
        forwarding.bp,
        maintenance.bp,
        admin.bp,
        ota.bp,
        billing.bp,
        reports.bp,
        team.bp,
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
