"""SQL time-series backend: samples and rollups in the relational database.

Tables (``cloud/models/timeseries.py``, created by the migrations):
``ts_series`` maps (terminal, channel) to a small integer id, ``ts_samples``
is keyed (series, ts) and ``ts_rollups`` holds min/max/sum/count per
(series, width, bucket) for hour and day buckets.

A write is one transaction: upsert the samples (one DBAPI ``executemany`` of
``INSERT ... ON CONFLICT DO UPDATE``; going through SQLAlchemy's per-row
parameter processing cost three times as much) and mark every hour bucket
it touched *dirty*. Rollups are rebuilt lazily and always from raw: every
hour bucket marked dirty is recomputed from its samples and its day from its
hours, which keeps them exact when a redelivered sample overwrites an old
one. That happens

- in :meth:`SqlStore.settle`, which :meth:`SqlStore.write` calls at most
  every ``settle_s`` seconds (so a busy ingest recomputes an hour once per
  interval, not once per batch: that was half the cost of a write), and
- before any query reads a rollup of a series with dirty buckets, so queries
  stay exact whoever wrote and whenever.

A dirty mark is a row of ``ts_rollups`` with ``width = DIRTY`` (-3600) and
the hour's start as ``bucket``: committed with the samples, visible to every
process, found by primary key, ignored by every reader (they ask for width
3600 or 86400). Refreshing deletes the marks *first*, then recomputes: a
sample committed meanwhile either is seen by the recomputation or leaves a
fresh mark behind. Works on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from cloud.errors import TimeseriesError
from cloud.models.timeseries import rollups, samples, series
from cloud.timeseries.base import TimeSeriesStore
from cloud.timeseries.planning import DAY, HOUR, RAW, Partial, Piece, dedupe, runs
from cloud.timeseries.points import Instant, Point, check_series, to_epoch

log = logging.getLogger(__name__)
_S, _R = samples.c, rollups.c
DIRTY = -HOUR  # ``width`` of a dirty mark in ts_rollups (see the module doc)


def _int(n: int) -> sa.ColumnElement[int]:
    # Constants are inlined, not bound: PostgreSQL only matches a GROUP BY
    # expression to the SELECT list if both are literally the same text.
    return sa.literal_column(str(int(n)), sa.BigInteger)


def _bucket(col: sa.ColumnElement[int], width: int, offset: int) -> sa.ColumnElement[int]:
    """Start of the ``width`` bucket (shifted by ``offset``) holding ``col``.

    SQL integer division truncates toward zero, so the dividend is kept
    non-negative: floor((t - off) / w) * w + off == ((t + w - off) / w) * w - (w - off).
    """
    if offset == 0:
        return (col // _int(width)) * _int(width)
    shift = width - offset
    return ((col + _int(shift)) // _int(width)) * _int(width) - _int(shift)


class SqlStore(TimeSeriesStore):
    """Time series in the SQL database behind ``engine`` (SQLite or PostgreSQL).

    Thread-safe as far as the engine is: the state is a cache of series ids,
    which never changes meaning once an id exists, and the set of hour
    buckets this store marked dirty (under a lock). ``settle_s`` bounds how
    long :meth:`write` leaves its dirty buckets for a query to refresh;
    ``clock`` is a monotonic clock in seconds (tests pass their own). A
    refresh recomputes whole hours, so the default is 30 s: at 2 s a busy
    ingest spent a twentieth of its writer's time on it.
    """

    def __init__(
        self,
        engine: Engine,
        batch_size: int = 5000,
        settle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise TimeseriesError(f"unsupported database {engine.dialect.name}")
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        self.engine = engine
        self.batch_size = batch_size
        self.settle_s = settle_s
        self.clock = clock
        self._ids: dict[tuple[str, str], int] = {}
        self._insert = sqlite.insert if engine.dialect.name == "sqlite" else postgresql.insert
        self._lock = threading.Lock()
        self._dirty: set[tuple[int, int]] = set()  # (series id, hour) marked by this store
        self._settle_due = clock() + settle_s
        q = "?" if engine.dialect.name == "sqlite" else "%s"
        # Driver-level statements for the hot path. Only the DBAPI placeholder
        # and the integer DIRTY are interpolated, hence the S608 suppressions.
        self._upsert_sql = (
            "INSERT INTO ts_samples (series_id, ts, value, quality, historical) "  # noqa: S608
            f"VALUES ({q}, {q}, {q}, {q}, {q}) ON CONFLICT (series_id, ts) DO UPDATE SET "
            "value = excluded.value, quality = excluded.quality, historical = excluded.historical"
        )
        self._mark_sql = (
            "INSERT INTO ts_rollups (series_id, width, bucket, min, max, sum, count) "  # noqa: S608
            f"VALUES ({q}, {DIRTY}, {q}, 0, 0, 0, 0) ON CONFLICT DO NOTHING"
        )
        self._unmark_sql = (
            f"DELETE FROM ts_rollups WHERE series_id = {q} AND width = {DIRTY} AND bucket = {q}"  # noqa: S608
        )

    # -- writing -------------------------------------------------------------

    def prepare(self) -> None:
        names = set(sa.inspect(self.engine).get_table_names())
        missing = {t.name for t in (series, samples, rollups)} - names
        if missing:
            raise TimeseriesError(f"tables {sorted(missing)} missing: run cloud.db.upgrade")

    def write(self, points: Iterable[Point]) -> int:
        """Store ``points`` (see :meth:`TimeSeriesStore.write`); the rollups they
        touch are refreshed by :meth:`settle` or by the next query that needs them."""
        unique = dedupe(points)
        for i in range(0, len(unique), self.batch_size):
            chunk = unique[i : i + self.batch_size]
            try:
                with self.engine.begin() as conn:
                    touched = self._write_chunk(conn, chunk)
            except sa.exc.SQLAlchemyError as err:
                # The rollback also undid any series this chunk created, whose
                # ids are cached by now: forget them, or every retry breaks the FK.
                self._ids.clear()
                raise TimeseriesError(f"writing {len(chunk)} samples failed: {err}") from err
            with self._lock:
                self._dirty |= touched
        if self.clock() >= self._settle_due:
            try:
                self.settle()
            except TimeseriesError as err:
                # The samples and their marks are stored: only the refresh
                # waits, for the next write or the first query that needs it.
                log.warning("rollup refresh failed, left for later: %s", err)
        return len(unique)

    def _write_chunk(self, conn: Connection, chunk: Sequence[Point]) -> set[tuple[int, int]]:
        """Upsert ``chunk`` and mark its hour buckets dirty; return those buckets."""
        ids = self._series_ids(conn, {(p.terminal, p.channel) for p in chunk})
        rows = [(ids[p.terminal, p.channel], p.ts, p.value, p.quality, p.historical) for p in chunk]
        conn.exec_driver_sql(self._upsert_sql, rows)
        # Marked in every write, even if this store marked the bucket before: a
        # query elsewhere may have refreshed it (and deleted the mark) since.
        touched = {(sid, ts - ts % HOUR) for sid, ts, _v, _q, _h in rows}
        conn.exec_driver_sql(self._mark_sql, sorted(touched))
        return touched

    def settle(self) -> None:
        """Refresh now every rollup bucket this store marked dirty.

        Raises :class:`TimeseriesError` if the database fails; the buckets
        then stay dirty (marked in the database and here) for the next try.
        """
        with self._lock:
            pending, self._dirty = self._dirty, set()
            self._settle_due = self.clock() + self.settle_s
        if not pending:
            return
        # In key order, as the marks were written: two refreshing writers on
        # PostgreSQL then take their row locks in the same order.
        hours: dict[int, set[int]] = defaultdict(set)
        for sid, hour in sorted(pending):
            hours[sid].add(hour)
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(self._unmark_sql, sorted(pending))
                self._refresh(conn, hours)
        except sa.exc.SQLAlchemyError as err:
            with self._lock:
                self._dirty |= pending
            raise TimeseriesError(
                f"refreshing {len(pending)} rollup buckets failed: {err}"
            ) from err

    def _settle_series(self, sid: int) -> None:
        """Refresh the dirty buckets of series ``sid``, whoever marked them."""
        marked = sa.select(_R.bucket).where(_R.series_id == sid, _R.width == DIRTY).limit(1)
        with self._reading() as conn:
            if conn.execute(marked).first() is None:
                return
        try:
            with self.engine.begin() as conn:
                # Delete first (RETURNING): it takes the write lock, and a mark
                # committed after it stays for the next refresh.
                rows = conn.execute(
                    rollups.delete()
                    .where(_R.series_id == sid, _R.width == DIRTY)
                    .returning(_R.bucket)
                )
                buckets = {int(b) for (b,) in rows}
                if buckets:
                    self._refresh(conn, {sid: buckets})
        except sa.exc.SQLAlchemyError as err:
            raise TimeseriesError(f"refreshing rollups of series {sid} failed: {err}") from err

    def _refresh(self, conn: Connection, hours: dict[int, set[int]]) -> None:
        """Recompute the given hour buckets from raw, then their days from hours."""
        hour_ranges = [
            {"sid": sid, "lo": lo, "hi": hi}
            for sid, buckets in hours.items()
            for lo, hi in runs(buckets, HOUR)
        ]
        day_ranges = [
            {"sid": sid, "lo": lo, "hi": hi}
            for sid, buckets in hours.items()
            for lo, hi in runs((b // DAY * DAY for b in buckets), DAY)
        ]
        if hour_ranges:
            conn.execute(self._rollup_from_raw(), hour_ranges)
            conn.execute(self._rollup_from_hours(), day_ranges)

    def _upsert_rollup(self, select: sa.Select[Any]) -> sa.Insert:
        cols = ["series_id", "width", "bucket", "min", "max", "sum", "count"]
        stmt = self._insert(rollups).from_select(cols, select)
        return stmt.on_conflict_do_update(
            index_elements=[_R.series_id, _R.width, _R.bucket],
            set_={c: getattr(stmt.excluded, c) for c in ("min", "max", "sum", "count")},
        )

    def _rollup_from_raw(self) -> sa.Insert:
        bucket = _bucket(_S.ts, HOUR, 0)
        select = (
            sa.select(
                _S.series_id,
                _int(HOUR),
                bucket,
                sa.func.min(_S.value),
                sa.func.max(_S.value),
                sa.func.sum(_S.value),
                sa.func.count(),
            )
            .where(_S.series_id == sa.bindparam("sid"))
            .where(_S.ts >= sa.bindparam("lo"), _S.ts < sa.bindparam("hi"))
            .group_by(_S.series_id, bucket)
        )
        return self._upsert_rollup(select)

    def _rollup_from_hours(self) -> sa.Insert:
        hour = rollups.alias("hour")
        bucket = _bucket(hour.c.bucket, DAY, 0)
        select = (
            sa.select(
                hour.c.series_id,
                _int(DAY),
                bucket,
                sa.func.min(hour.c.min),
                sa.func.max(hour.c.max),
                sa.func.sum(hour.c.sum),
                sa.func.sum(hour.c.count),
            )
            .where(hour.c.series_id == sa.bindparam("sid"), hour.c.width == HOUR)
            .where(hour.c.bucket >= sa.bindparam("lo"), hour.c.bucket < sa.bindparam("hi"))
            .group_by(hour.c.series_id, bucket)
        )
        return self._upsert_rollup(select)

    def _series_ids(
        self, conn: Connection, keys: set[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        missing = [k for k in keys if k not in self._ids]
        if missing:
            # ON CONFLICT DO NOTHING: another writer may create the same series.
            ins = self._insert(series).on_conflict_do_nothing()
            conn.execute(ins, [{"terminal": t, "channel": c} for t, c in missing])
            self._ids.update(self._lookup(conn, missing))
        return {k: self._ids[k] for k in keys}

    def _lookup(
        self, conn: Connection, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        found: dict[tuple[str, str], int] = {}
        terminals = sorted({t for t, _ in keys})
        for i in range(0, len(terminals), 500):
            rows = conn.execute(
                sa.select(series.c.terminal, series.c.channel, series.c.id).where(
                    series.c.terminal.in_(terminals[i : i + 500])
                )
            )
            found.update({(t, c): sid for t, c, sid in rows})
        return found

    def _series_id(self, conn: Connection, terminal: str, channel: str) -> int | None:
        key = (terminal, channel)
        if key not in self._ids:
            sid = conn.scalar(
                sa.select(series.c.id).where(
                    series.c.terminal == terminal, series.c.channel == channel
                )
            )
            if sid is None:
                return None
            self._ids[key] = sid
        return self._ids[key]

    # -- reading -------------------------------------------------------------

    def _raw(self, terminal: str, channel: str, lo: int, hi: int, limit: int) -> list[Point]:
        with self._reading() as conn:
            sid = self._series_id(conn, terminal, channel)
            if sid is None:
                return []
            rows = conn.execute(
                sa.select(_S.ts, _S.value, _S.quality, _S.historical)
                .where(_S.series_id == sid, _S.ts >= lo, _S.ts < hi)
                .order_by(_S.ts)
                .limit(limit)
            )
            return [Point(terminal, channel, ts, v, q, h) for ts, v, q, h in rows]

    def _partials(
        self, terminal: str, channel: str, pieces: Sequence[Piece], width: int, offset: int
    ) -> list[Partial]:
        out: list[Partial] = []
        with self._reading() as conn:
            sid = self._series_id(conn, terminal, channel)
        if sid is None:
            return out
        if any(tier != RAW for tier, _lo, _hi in pieces):
            self._settle_series(sid)
        with self._reading() as conn:
            for tier, lo, hi in pieces:
                if tier == RAW:
                    stmt = self._raw_piece(width, offset)
                else:
                    stmt = self._rollup_piece(tier, width, offset)
                rows = conn.execute(stmt, {"sid": sid, "lo": lo, "hi": hi})
                out.extend(
                    (int(b), lo_, hi_, float(total), int(n)) for b, lo_, hi_, total, n in rows
                )
        return out

    @staticmethod
    def _raw_piece(width: int, offset: int) -> sa.Select:
        bucket = _bucket(_S.ts, width, offset)
        return (
            sa.select(
                bucket,
                sa.func.min(_S.value),
                sa.func.max(_S.value),
                sa.func.sum(_S.value),
                sa.func.count(),
            )
            .where(_S.series_id == sa.bindparam("sid"))
            .where(_S.ts >= sa.bindparam("lo"), _S.ts < sa.bindparam("hi"))
            .group_by(bucket)
        )

    @staticmethod
    def _rollup_piece(tier: int, width: int, offset: int) -> sa.Select:
        bucket = _bucket(_R.bucket, width, offset)
        return (
            sa.select(
                bucket,
                sa.func.min(_R.min),
                sa.func.max(_R.max),
                sa.func.sum(_R.sum),
                sa.func.sum(_R.count),
            )
            .where(_R.series_id == sa.bindparam("sid"), _R.width == tier)
            .where(_R.bucket >= sa.bindparam("lo"), _R.bucket < sa.bindparam("hi"))
            .group_by(bucket)
        )

    def latest(self, terminal: str) -> dict[str, Point]:
        return self.latest_many([terminal]).get(terminal, {})

    def latest_many(self, terminals: Sequence[str]) -> dict[str, dict[str, Point]]:
        for t in terminals:
            check_series(t, "-")
        if not terminals:
            return {}
        inner = samples.alias("newest")
        newest = (
            sa.select(sa.func.max(inner.c.ts))
            .where(inner.c.series_id == series.c.id)
            .correlate(series)
            .scalar_subquery()
        )
        stmt = (
            sa.select(
                series.c.terminal, series.c.channel, _S.ts, _S.value, _S.quality, _S.historical
            )
            .join(samples, _S.series_id == series.c.id)
            .where(series.c.terminal.in_(list(terminals)), _S.ts == newest)
        )
        out: dict[str, dict[str, Point]] = {}
        with self._reading() as conn:
            for t, c, ts, v, q, h in conn.execute(stmt):
                # Stored points were validated on the way in (see Point).
                out.setdefault(t, {})[c] = tuple.__new__(Point, (t, c, ts, v, q, bool(h)))
        return out

    def _series(self) -> list[tuple[str, str]]:
        has_data = sa.exists().where(samples.c.series_id == series.c.id)
        stmt = (
            sa.select(series.c.terminal, series.c.channel)
            .where(has_data)
            .order_by(series.c.terminal, series.c.channel)
        )
        with self._reading() as conn:
            return [(t, c) for t, c in conn.execute(stmt)]

    # -- retention -----------------------------------------------------------

    def delete_before(self, ts: Instant) -> None:
        cutoff = to_epoch(ts)
        try:
            with self.engine.begin() as conn:
                sids = list(conn.scalars(sa.select(series.c.id)))
                # Per series, so each DELETE is a primary-key range scan.
                params = [{"sid": sid, "cutoff": cutoff} for sid in sids]
                if not params:
                    return
                conn.execute(
                    samples.delete().where(
                        _S.series_id == sa.bindparam("sid"), _S.ts < sa.bindparam("cutoff")
                    ),
                    params,
                )
                # Drop every bucket (and dirty mark) that starts before the cutoff,
                # including the one the cutoff falls into, then rebuild that one
                # from what is left.
                conn.execute(
                    rollups.delete().where(
                        _R.series_id == sa.bindparam("sid"), _R.bucket < sa.bindparam("cutoff")
                    ),
                    params,
                )
                if cutoff % DAY:
                    self._refresh(conn, {sid: {cutoff // HOUR * HOUR} for sid in sids})
        except sa.exc.SQLAlchemyError as err:
            raise TimeseriesError(f"retention delete before {cutoff} failed: {err}") from err

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads; driver errors become :class:`TimeseriesError`."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as err:
            raise TimeseriesError(f"time-series query failed: {err}") from err
