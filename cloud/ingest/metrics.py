"""Prometheus metrics of the ingest worker (``python -m cloud.ingest --metrics-port N``).

The worker's :class:`cloud.ingest.counters.Counters` exported as
``mimamori_ingest_*_total`` counters, ``mimamori_ingest_rejected_total{reason}``
and the lag gauges ``mimamori_ingest_lag_seconds`` / ``..._max_lag_seconds``,
from a registry of its own on a small HTTP server (no Flask in this process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cloud.ingest.counters import Counters


class IngestCollector(Collector):
    """Exports one worker's :class:`Counters` at scrape time."""

    _COUNTERS = (
        ("received", "MQTT messages taken"),
        ("stored_frames", "Frames whose effects were committed"),
        ("stored_values", "Samples written to the time-series store"),
        ("duplicates", "Frames dropped as already stored"),
        ("historical", "Frames marked late (store-and-forward)"),
        ("deferred", "Times a data frame waited for its birth"),
        ("batches", "Committed batches"),
        ("batch_failures", "Batches that failed and were retried"),
        ("acks_sent", "Ack frames published to terminals"),
        ("acked_frames", "Uplink frames the acks named"),
        ("ack_failures", "Ack frames that could not be sent"),
        ("config_repushes", "Pending configs published again after their ack deadline"),
        ("config_repush_failures", "Config re-push passes ended by a publish error"),
    )

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Any]:
        snap = self.counters.snapshot()
        for name, text in self._COUNTERS:
            yield CounterMetricFamily(f"mimamori_ingest_{name}", text, value=snap[name])
        rejected = CounterMetricFamily(
            "mimamori_ingest_rejected", "Refused messages", labels=("reason",)
        )
        for reason, n in snap["rejected"].items():
            rejected.add_metric((reason,), n)
        yield rejected
        yield GaugeMetricFamily(
            "mimamori_ingest_lag_seconds",
            "Receipt to commit of the last batch's oldest message",
            value=snap["lag_s"],
        )
        yield GaugeMetricFamily(
            "mimamori_ingest_max_lag_seconds", "Largest lag seen", value=snap["max_lag_s"]
        )


def ingest_registry(counters: Counters) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(counters))
    return registry


def serve_ingest(counters: Counters, port: int, host: str = "127.0.0.1") -> Any:
    """Start the ingest exporter on a daemon thread; returns (server, thread)."""
    return start_http_server(port, addr=host, registry=ingest_registry(counters))
