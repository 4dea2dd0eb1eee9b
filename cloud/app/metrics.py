"""Prometheus metrics of the web role (``prometheus-client``), served at ``/metrics``.

The app builds its own :class:`~prometheus_client.CollectorRegistry`
(never the library's global default), so two apps in one test process, or
an app rebuilt by a test, do not collide.

- ``mimamori_http_request_duration_seconds{method,endpoint,status}``
  histogram (``endpoint`` is the Flask endpoint name, not the URL, so ids
  do not explode the label space);
- ``mimamori_outbox_depth{status}``: notifications waiting (queued, failed)
  or given up (dead); ``mimamori_outbox_oldest_due_seconds``: how late the
  oldest due one is;
- ``mimamori_alarms_open{severity,state}``: raised and acknowledged alarms;
- ``mimamori_terminals{connectivity}`` (in service: online, offline, never),
  ``mimamori_terminals_silent``, ``mimamori_configs_pending``,
  ``mimamori_config_repushes`` (re-publications of those still pending),
  ``mimamori_parked_frames{reason}``;
- ``mimamori_ingest_stored_frames_per_second`` (last 5 minutes, every
  worker) and ``mimamori_ingest_last_frame_age_seconds``;
- ``mimamori_broker_clients_connected`` (the scheduler's broker check),
  ``mimamori_backup_last_success_timestamp_seconds``.

The database gauges are read at scrape time by :mod:`cloud.services.console`,
the computation the operations console shows, so the page and the metrics
cannot disagree. The ingest worker's own metrics are :mod:`cloud.ingest.metrics`.
"""

from __future__ import annotations

import time
from datetime import datetime

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.orm import Session

from cloud.services import console

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WebMetrics:
    """The web role's registry: request latency plus database gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "mimamori_http_request_duration_seconds",
            "Time to answer a web request",
            ("method", "endpoint", "status"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.outbox = Gauge(
            "mimamori_outbox_depth",
            "Notifications not yet delivered",
            ("status",),
            registry=self.registry,
        )
        self.outbox_late = Gauge(
            "mimamori_outbox_oldest_due_seconds",
            "How long the oldest due notification has waited",
            registry=self.registry,
        )
        self.alarms = Gauge(
            "mimamori_alarms_open",
            "Alarms not cleared",
            ("severity", "state"),
            registry=self.registry,
        )
        self.terminals = Gauge(
            "mimamori_terminals",
            "Terminals in service by connectivity",
            ("connectivity",),
            registry=self.registry,
        )
        self.silent = Gauge(
            "mimamori_terminals_silent",
            "Terminals in service quiet for longer than their heartbeat",
            registry=self.registry,
        )
        self.pending = Gauge(
            "mimamori_configs_pending",
            "Configurations published and not yet acknowledged",
            registry=self.registry,
        )
        self.repushes = Gauge(
            "mimamori_config_repushes",
            "Times the configurations still pending were published again",
            registry=self.registry,
        )
        self.parked = Gauge(
            "mimamori_parked_frames",
            "Frames kept but not applied",
            ("reason",),
            registry=self.registry,
        )
        self.ingest_rate = Gauge(
            "mimamori_ingest_stored_frames_per_second",
            "Frames stored per second over the last 5 minutes (all workers)",
            registry=self.registry,
        )
        self.ingest_age = Gauge(
            "mimamori_ingest_last_frame_age_seconds",
            "Age of the newest stored frame",
            registry=self.registry,
        )
        self.broker_clients = Gauge(
            "mimamori_broker_clients_connected",
            "Clients connected to the broker at its last health check",
            registry=self.registry,
        )
        self.backup_ok = Gauge(
            "mimamori_backup_last_success_timestamp_seconds",
            "When the newest successful (and verified) backup finished",
            registry=self.registry,
        )

    def instrument(self, app: Flask) -> None:
        """Time every request of ``app`` (before_request / after_request)."""

        @app.before_request
        def _start() -> None:
            g.mimamori_started = time.perf_counter()

        @app.after_request
        def _observe(response: Response) -> Response:
            started = g.pop("mimamori_started", None)
            if started is not None:
                self.latency.labels(
                    request.method, request.endpoint or "unmatched", str(response.status_code)
                ).observe(time.perf_counter() - started)
            return response

    def refresh(self, session: Session, now: datetime) -> None:
        """Read the database gauges (at scrape time)."""
        box = console.outbox(session, now)
        for status, n in (("queued", box.queued), ("failed", box.failed), ("dead", box.dead)):
            self.outbox.labels(status).set(n)
        self.outbox_late.set(box.oldest_due_s)
        for (severity, state), n in console.open_alarms(session).items():
            self.alarms.labels(str(severity), str(state)).set(n)
        fleet = console.fleet(session, now)
        for conn in ("online", "offline", "never"):
            self.terminals.labels(conn).set(fleet.count(conn))
        self.silent.set(fleet.silent_total)
        self.pending.set(fleet.configs_pending)
        self.repushes.set(fleet.config_repushes)
        self.parked.clear()
        for reason, n in fleet.parked.items():
            self.parked.labels(reason).set(n)
        ingest = console.ingest(session, now)
        self.ingest_rate.set(ingest.frames_per_s)
        self.ingest_age.set(ingest.last_frame_age_s if ingest.last_frame_age_s is not None else -1)
        clients = console.broker(session).clients_connected
        self.broker_clients.set(clients if clients is not None else -1)
        good = console.backups(session).last_ok
        finished = good.finished_at if good is not None else None
        self.backup_ok.set(finished.timestamp() if finished is not None else 0)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
