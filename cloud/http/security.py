"""Security events of the web role: logged and audited.

Refused requests (403), CSRF failures, API calls with a bad bearer token
(401 with an ``Authorization`` header) and bursts of 404s from one address
(someone walking through ids or paths) are written to the
``mimamori.security`` logger (the role's ``*-security`` log file, see
:mod:`cloud.ops.logfiles`) and as ``security.*`` audit entries, which the
operator's audit view lists (filter ``security.``).

A 404 burst is ``NOT_FOUND_BURST`` answers to one address within
``NOT_FOUND_WINDOW_S``; it is recorded once per window and address. The
counts live in this process only (each web process sees its own share).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from flask import Flask, Response, request
from flask_login import current_user

from cloud.http import context
from cloud.services import audit

log = logging.getLogger("mimamori.security")

NOT_FOUND_BURST = 20
NOT_FOUND_WINDOW_S = 60.0
_MAX_ADDRESSES = 10_000  # memory bound of the 404 counters
_EVENT = "mimamori.security_event"  # in the request's environ


def mark(event: str) -> None:
    """Tell the after-request hook what this failure was (e.g. ``"csrf"``)."""
    request.environ[_EVENT] = event


class SecurityEvents:
    """The after-request hook and the 404 burst counters of one app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_found: dict[str, deque[float]] = {}
        self._reported: dict[str, float] = {}

    def install(self, app: Flask) -> None:
        app.after_request(self.after_request)

    def after_request(self, response: Response) -> Response:
        status = response.status_code
        event: str | None = request.environ.pop(_EVENT, None)
        if event is None:
            if status == 403:
                event = "forbidden"
            elif status == 401 and "Authorization" in request.headers:
                event = "bad_token"
            elif status == 404 and self._burst(request.remote_addr or "?"):
                event = "not_found_burst"
        if event is not None:
            self.record(event, status)
        return response

    def record(self, event: str, status: int) -> None:
        """Log and audit one event (its own transaction: the request's may have failed)."""
        who = current_user if current_user and current_user.is_authenticated else None
        viewer = context.viewer() if who is not None else None
        ip = request.remote_addr
        details = {"path": request.path, "method": request.method, "status": status}
        log.warning(
            "security.%s %s %s from %s as %s",
            event,
            request.method,
            request.path,
            ip,
            viewer.email if viewer else "anonymous",
        )
        try:
            with context.ctx().sessions() as session:
                audit.record(
                    session,
                    viewer,
                    f"security.{event}",
                    "request",
                    request.path[:64],
                    at=context.now(),
                    ip=ip,
                    details=details,
                )
                session.commit()
        except Exception:  # the log line above stands even if the database does not
            log.exception("security.%s could not be audited", event)

    def _burst(self, ip: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._not_found) > _MAX_ADDRESSES:
                self._not_found.clear()
                self._reported.clear()
            seen = self._not_found.setdefault(ip, deque())
            seen.append(now)
            while seen and seen[0] < now - NOT_FOUND_WINDOW_S:
                seen.popleft()
            if len(seen) < NOT_FOUND_BURST:
                return False
            if now - self._reported.get(ip, -NOT_FOUND_WINDOW_S) < NOT_FOUND_WINDOW_S:
                return False
            self._reported[ip] = now
            return True
