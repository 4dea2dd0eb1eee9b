"""Time-series storage: one interface (:class:`TimeSeriesStore`), two backends.

- :class:`SqlStore` keeps samples in the relational database (default);
- :class:`InfluxStore` sends them to InfluxDB through its v1 HTTP API.

Both are idempotent per (terminal, channel, ts), answer raw points for short
ranges and min/mean/max buckets for long ones from hour/day rollups, and
share one backup format, so a site can move from one to the other with
``export`` then ``import_``.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from cloud.config import Settings
from cloud.timeseries.base import DEFAULT_MAX_POINTS, TimeSeriesStore
from cloud.timeseries.influx import InfluxStore
from cloud.timeseries.points import Bucket, Point, QueryResult
from cloud.timeseries.sql import SqlStore


def make_store(settings: Settings, engine: Engine) -> TimeSeriesStore:
    """The backend ``settings.timeseries_backend`` names (``engine`` serves "sql")."""
    if settings.timeseries_backend == "influx":
        return InfluxStore.from_settings(settings)
    return SqlStore(engine)


__all__ = [
    "DEFAULT_MAX_POINTS",
    "Bucket",
    "InfluxStore",
    "Point",
    "QueryResult",
    "SqlStore",
    "TimeSeriesStore",
    "make_store",
]
