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
- ``mimamori_alarms_open{severity,state}``: raised and acknowledged alarms.

The database gauges are read at scrape time (one small grouped query each).
The ingest worker's metrics are :mod:`cloud.ingest.metrics`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.orm import Session

from cloud.models import Alarm, AlarmState, Delivery, DeliveryStatus, Severity

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.FAILED, DeliveryStatus.DEAD)


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
        depth = dict.fromkeys(WAITING, 0)
        for status, n in session.execute(
            sa.select(Delivery.status, sa.func.count())
            .where(Delivery.status.in_(WAITING))
            .group_by(Delivery.status)
        ):
            depth[DeliveryStatus(status)] = int(n)
        for status, n in depth.items():
            self.outbox.labels(str(status)).set(n)
        oldest = session.scalar(
            sa.select(sa.func.min(Delivery.next_attempt_at)).where(
                Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.FAILED))
            )
        )
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        self.outbox_late.set(max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        counts = {
            (s, st): 0 for s in Severity for st in (AlarmState.RAISED, AlarmState.ACKNOWLEDGED)
        }
        for severity, state, n in session.execute(
            sa.select(Alarm.severity, Alarm.state, sa.func.count())
            .where(Alarm.state != AlarmState.CLEARED)
            .group_by(Alarm.severity, Alarm.state)
        ):
            counts[(Severity(severity), AlarmState(state))] = int(n)
        for (severity, state), n in counts.items():
            self.alarms.labels(str(severity), str(state)).set(n)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
