"""The REST API (``/api/v1``): a thin JSON layer over the site's services,
authenticated by per-user bearer tokens (:mod:`cloud.api.auth`), described
by an OpenAPI document at ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Flask

from cloud.api import errors
from cloud.api.views import bp


def register(app: Flask) -> None:
    """Mount the API on ``app``: blueprint, JSON errors, CSRF exemption
    (bearer tokens only; a session cookie alone never authenticates)."""
    errors.register(app)
    csrf: Any = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)
    app.register_blueprint(bp)
