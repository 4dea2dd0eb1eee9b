"""Health, readiness and metrics routes of the web role.

``/healthz`` says this process is alive and can reach the database.
``/readyz`` says whether it can do its job: the database, the MQTT broker
(config pushes: the web's account logs in, so it is our broker) and the
time-series store all answer. Load balancers take
a web process out of rotation on 503; the JSON body says which dependency
failed. No login, no customer data.
``/metrics`` serves Prometheus metrics (:mod:`cloud.app.metrics`).

``/metrics`` and ``/readyz`` show counts across customers and the state of
the dependencies, so they answer only the host itself (a loopback peer, and
no ``X-Forwarded-For``: a reverse proxy on the same host forwards outsiders)
or a request carrying ``Authorization: Bearer <monitoring_token>``; anyone
else gets 403. ``/healthz`` stays open: it says "ok" and nothing more. The
broker check of ``/readyz`` is reused for ``readiness_broker_cache_s``, so
polling it does not open an MQTT connection per request.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask, Response, abort, request

from cloud.app import metrics
from cloud.broker import probe
from cloud.http import context

log = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0


def check_database() -> None:
    context.db().execute(sa.text("SELECT 1"))


def check_broker() -> None:
    """The web's own account logs in where the publisher connects: a foreign
    broker on that port refuses it (:mod:`cloud.broker.probe`)."""
    web = context.ctx().web
    code = probe.login(
        web.mqtt_host,
        web.mqtt_port,
        web.mqtt_username,
        web.mqtt_password,
        timeout_s=BROKER_TIMEOUT_S,
        tls=bool(web.mqtt_tls_ca),
        tls_ca=web.mqtt_tls_ca,
        client_id_prefix="mimamori-readyz",
    )
    if code != 0:
        raise PermissionError(probe.describe(code))


class BrokerCheck:
    """:func:`check_broker`'s outcome, reused for ``ttl_s`` seconds (thread-safe)."""

    def __init__(self, ttl_s: float, check: Callable[[], None] = check_broker) -> None:
        self.ttl_s = ttl_s
        self.check = check
        self._lock = threading.Lock()
        self._until = 0.0
        self._error: Exception | None = None

    def __call__(self) -> None:
        with self._lock:
            if time.monotonic() >= self._until:
                try:
                    self.check()
                    self._error = None
                except Exception as err:  # kept, and raised again until it expires
                    self._error = err
                self._until = time.monotonic() + self.ttl_s
            error = self._error
        if error is not None:
            raise error


def monitoring_allowed(token: str) -> bool:
    """The host itself, or the monitoring token (compared in constant time)."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token):
        return True
    peer = request.environ.get("werkzeug.proxy_fix.orig_remote_addr") or request.remote_addr
    try:
        local = ipaddress.ip_address(peer or "").is_loopback
    except ValueError:
        local = False
    return local and "X-Forwarded-For" not in request.headers


def check_store() -> None:
    # The cheapest read every backend implements: newest samples of no terminal.
    context.ctx().store.latest("readyz-probe")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "broker": check_broker,
    "timeseries": check_store,
}


def readiness(checks: dict[str, Callable[[], None]] | None = None) -> tuple[dict[str, Any], int]:
    """Run every check; (JSON body, 200 if all passed else 503)."""
    results: dict[str, Any] = {}
    ok = True
    for name, check in (checks or CHECKS).items():
        started = time.monotonic()
        try:
            check()
        except Exception as err:
            ok = False
            log.warning("readiness: %s failed: %s", name, err)
            results[name] = {
                "ok": False,
                "error": type(err).__name__,
                "ms": round((time.monotonic() - started) * 1000, 1),
            }
        else:
            results[name] = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    return {"status": "ready" if ok else "unavailable", "checks": results}, (200 if ok else 503)


def register(app: Flask) -> None:
    """Add ``/healthz``, ``/readyz`` and ``/metrics`` and the request-latency hooks."""

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

    web = cast(context.WebContext, app.extensions["mimamori"]).web
    broker = BrokerCheck(web.readiness_broker_cache_s)

    def guard() -> None:
        if not monitoring_allowed(web.monitoring_token):
            abort(403)

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        guard()
        checks = app.extensions.get("mimamori_ready_checks") or {**CHECKS, "broker": broker}
        body, status = readiness(checks)
        return body, status, {"Cache-Control": "no-store"}

    registry = metrics.WebMetrics()
    app.extensions["mimamori_metrics"] = registry
    registry.instrument(app)

    @app.get("/metrics")
    def prometheus() -> Response:
        guard()
        registry.refresh(context.db(), context.now())
        return Response(registry.render(), mimetype=metrics.CONTENT_TYPE)
