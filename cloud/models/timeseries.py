"""Tables of the SQL time-series backend (see :mod:`cloud.timeseries.sql`).

They live on the same metadata as the ORM models so Alembic migrates them
like everything else. They are Core tables, not mapped classes: the backend
writes them in bulk with dialect upserts, never row by row through a Session.

Timestamps are integer epoch seconds (UTC by definition): compact, the same
on SQLite and PostgreSQL, and bucket arithmetic is integer division.
On SQLite the sample and rollup tables are WITHOUT ROWID, so rows are stored
in primary-key order and a range scan of one series reads adjacent pages.
"""

from __future__ import annotations

import sqlalchemy as sa

from cloud.models.base import Base
from protocol.limits import MAX_STR, MAX_TID

series = sa.Table(
    "ts_series",
    Base.metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("terminal", sa.String(MAX_TID), nullable=False),
    sa.Column("channel", sa.String(MAX_STR), nullable=False),
    sa.UniqueConstraint("terminal", "channel"),
)

samples = sa.Table(
    "ts_samples",
    Base.metadata,
    sa.Column("series_id", sa.Integer, sa.ForeignKey("ts_series.id"), primary_key=True),
    sa.Column("ts", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("value", sa.Double, nullable=False),
    sa.Column("quality", sa.Integer, nullable=False),
    sa.Column("historical", sa.Boolean, nullable=False),
    sqlite_with_rowid=False,
)

# min/max/sum/count per series and bucket; width is 3600 or 86400 seconds and
# bucket the bucket's start (a multiple of width).
rollups = sa.Table(
    "ts_rollups",
    Base.metadata,
    sa.Column("series_id", sa.Integer, sa.ForeignKey("ts_series.id"), primary_key=True),
    sa.Column("width", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("bucket", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("min", sa.Double, nullable=False),
    sa.Column("max", sa.Double, nullable=False),
    sa.Column("sum", sa.Double, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)
