"""Health, readiness and metrics routes of the web role.

``/healthz`` says this process is alive and can reach the database.
``/readyz`` says whether it can do its job: the database, the MQTT broker
(config pushes: the web's account logs in, so it is our broker) and the
time-series store all answer. Load balancers take
a web process out of rotation on 503; the JSON body says which dependency
failed. No login, no customer data.
``/metrics`` serves Prometheus metrics (:mod:`cloud.app.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask, Response

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

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int, dict[str, str]]:
        body, status = readiness(app.extensions.get("mimamori_ready_checks"))
        return body, status, {"Cache-Control": "no-store"}

    registry = metrics.WebMetrics()
    app.extensions["mimamori_metrics"] = registry
    registry.instrument(app)

    @app.get("/metrics")
    def prometheus() -> Response:
        registry.refresh(context.db(), context.now())
        return Response(registry.render(), mimetype=metrics.CONTENT_TYPE)
