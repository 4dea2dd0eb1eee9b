"""Errors of the REST API and the one place they become JSON.

Every error response has the same shape, whatever raised it::

    {"error": {"code": "not_found", "message": "Terminal 'TB1'"}}

``code`` is stable (clients branch on it); ``message`` is English text for
people. Service errors (:mod:`cloud.services.errors`) map by class, HTTP errors
by status; anything else is a 500 with no detail (it is logged).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from cloud.services.errors import Forbidden, Invalid, NotFound, PublishError, Throttled, WebError

log = logging.getLogger(__name__)

PREFIX = "/api/v1"

# Stable codes clients may rely on, by HTTP status.
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "throttled",
    500: "internal",
    502: "upstream_unavailable",
}


class ApiError(Exception):
    """An error a view raises on purpose: HTTP ``status``, stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Unauthorized(ApiError):
    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(401, "unauthorized", message)


class BadRequest(ApiError):
    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(400, code, message)


def body(status: int, code: str, message: str) -> tuple[Response, int]:
    response = jsonify({"error": {"code": code, "message": message}})
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mimamori"'
    return response, status


def _service(err: WebError) -> tuple[Response, int]:
    if isinstance(err, NotFound):
        # Same text for "missing" and "another customer's": ids cannot be probed.
        return body(404, "not_found", "no such object")
    if isinstance(err, Forbidden):
        return body(403, "forbidden", "your role may not do this")
    if isinstance(err, Throttled):
        response, status = body(429, "throttled", str(err))
        response.headers["Retry-After"] = str(err.retry_after)
        return response, status
    if isinstance(err, PublishError):
        return body(502, "upstream_unavailable", str(err))
    if isinstance(err, Invalid):
        return body(422, "invalid", str(err))
    return body(400, "bad_request", str(err))


def _http(err: HTTPException) -> tuple[Response, int]:
    status = err.code or 500
    response, status = body(
        status, CODES.get(status, "http_%d" % status), err.description or err.name
    )
    if status == 405 and err.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(err.valid_methods)  # type: ignore[attr-defined]
    return response, status


def is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def install(bp: Blueprint) -> None:
    """JSON handlers for everything the blueprint's views raise (blueprint
    handlers win over the site's HTML ones). Once, where the blueprint is made."""

    @bp.errorhandler(ApiError)
    def api_error(err: ApiError) -> tuple[Response, int]:
        return body(err.status, err.code, err.message)

    @bp.errorhandler(WebError)
    def service(err: WebError) -> tuple[Response, int]:
        return _service(err)

    @bp.errorhandler(HTTPException)
    def http(err: HTTPException) -> tuple[Response, int]:
        return _http(err)

    @bp.errorhandler(Exception)
    def internal(err: Exception) -> tuple[Response, int]:
        log.error("API request %s %s failed", request.method, request.path, exc_info=err)
        return body(500, "internal", "internal error")


def register(app: Flask) -> None:
    """JSON for routing errors (404/405) on API paths, which no blueprint
    handler sees because no view matched. Other paths keep the site's pages."""
    for status in (404, 405):
        previous = list(app.error_handler_spec[None][status].values())

        def routing(err: HTTPException, previous: list[Any] = previous) -> Any:
            if is_api_request():
                return _http(err)
            if previous:
                return previous[0](err)
            return err

        app.register_error_handler(status, routing)
