"""InfluxDB time-series backend over the v1 HTTP API (line protocol + InfluxQL).

Layout in the database:

- ``samples``: tags ``terminal``, ``channel``; fields ``value`` (float) and
  ``flags`` (integer: quality x 2 + 1 if historical); second precision.
  Influx's own rule makes writes idempotent: a point with the same
  measurement, tag set and timestamp replaces the old one. Every field
  costs the server as much as another point would, so quality and the
  historical flag share one (two fields store for 27 µs of its CPU per
  6-channel frame, three for 35). Samples written before that carry
  ``quality`` (integer) and ``historical`` (boolean) instead: readers fall
  back to them where ``flags`` is absent, and a rewrite's ``flags`` wins.
- ``samples_1h`` and ``samples_1d``: fields ``min``, ``max``, ``sum``,
  ``count`` per bucket and series, written by the server itself with
  ``SELECT ... INTO`` for exactly the hours and days that writes touched.
  Recomputing (not adding) keeps them exact on rewrites, and unlike
  continuous queries it also covers late store-and-forward data and
  imports, whatever their age.
- ``rollup_dirty``: one point per (terminal, hour) a write touched and whose
  rollups are not recomputed yet (tag ``terminal``, field ``n``, time = the
  hour's start), written in the same request as the samples, before them.

Rollups are recomputed lazily, as in the SQL backend: by :meth:`InfluxStore.settle`,
which :meth:`InfluxStore.write` calls at most every ``settle_s`` seconds (one
``SELECT ... INTO`` per terminal and run of hours per interval instead of per
write: those statements cost the server about four times the write itself),
and before any query reads a rollup of a terminal with dirty hours, so
queries stay exact whoever wrote. A refresh deletes the marks first, then
recomputes: a mark written meanwhile survives for the next refresh.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cloud.config import Settings
from cloud.errors import TimeseriesError
from cloud.timeseries.base import TimeSeriesStore
from cloud.timeseries.influx_wire import (
    InfluxClient,
    escape_tag,
    format_float,
    quote_ident,
    quote_str,
)
from cloud.timeseries.planning import DAY, HOUR, RAW, Partial, Piece, dedupe, runs
from cloud.timeseries.points import Instant, Point, check_series, to_epoch

log = logging.getLogger(__name__)

# Statements are InfluxQL built as text (there are no bound parameters in the
# v1 API); every identifier and string goes through quote_ident/quote_str and
# every number through int(), hence the S608 suppressions below.
SAMPLES = "samples"
ROLLUP = {HOUR: "samples_1h", DAY: "samples_1d"}
DIRTY = "rollup_dirty"
STATEMENTS_PER_REQUEST = 200


def line(p: Point) -> str:
    """Line protocol for one point (tags in key order, as Influx prefers)."""
    return _series_prefix(p.terminal, p.channel) + _fields(p)


def _lines_and_hours(chunk: Sequence[Point]) -> tuple[list[str], set[tuple[str, int]]]:
    """:func:`line` of every point, and the (terminal, hour) pairs they touch.

    The ingest's hot loop: one pass, no call per point but the cached tag
    prefix. A Point's value is a float and its quality an int (checked when
    it was made), so ``!r`` and ``str`` format them as :func:`_fields` does.
    """
    prefix = _series_prefix
    lines = []
    hours = set()
    for terminal, channel, ts, value, quality, historical in chunk:
        lines.append(
            f"{prefix(terminal, channel)}value={value!r},flags={quality * 2 + historical}i {ts}"
        )
        hours.add((terminal, ts - ts % HOUR))
    return lines, hours


@functools.lru_cache(maxsize=65536)
def _series_prefix(terminal: str, channel: str) -> str:
    # A handful of series carry all the traffic: escape their tags once.
    return f"{SAMPLES},channel={escape_tag(channel)},terminal={escape_tag(terminal)} "


def _fields(p: Point) -> str:
    return f"value={format_float(p.value)},flags={p.quality * 2 + p.historical}i {p.ts}"


# Readers ask for the old fields too: points written before ``flags`` have them.
_POINT_FIELDS = '"value", "flags", "quality", "historical"'


def _point(terminal: str, channel: str, row: Sequence[Any]) -> Point:
    """The Point of a result row ``[time, value, flags, quality, historical]``."""
    ts, value, flags, quality, historical = row
    if flags is not None:
        quality, historical = flags >> 1, bool(flags & 1)
    return Point(terminal, channel, ts, value, quality or 0, bool(historical))


def _where(terminal: str, channel: str | None, lo: int, hi: int) -> str:
    cond = f'"terminal" = {quote_str(terminal)}'
    if channel is not None:
        cond += f' AND "channel" = {quote_str(channel)}'
    return f"{cond} AND time >= {lo}s AND time < {hi}s"


def _rollup_into(tier: int, where: str) -> str:
    """Statement recomputing ``tier`` buckets selected by ``where`` (all series)."""
    if tier == HOUR:
        fields = (
            'min("value") AS "min", max("value") AS "max", '
            'sum("value") AS "sum", count("value") AS "count"'
        )
        source = SAMPLES
    else:
        fields = (
            'min("min") AS "min", max("max") AS "max", sum("sum") AS "sum", sum("count") AS "count"'
        )
        source = ROLLUP[HOUR]
    # GROUP BY * keeps terminal and channel as tags of the written points.
    return (
        f"SELECT {fields} INTO {quote_ident(ROLLUP[tier])} FROM {quote_ident(source)} "  # noqa: S608
        f"WHERE {where} GROUP BY time({tier}s), *"
    )


class InfluxStore(TimeSeriesStore):
    """Time series in database ``database`` of the server behind ``client``.

    ``settle_s`` bounds how long :meth:`write` leaves the hours it touched
    for a query to refresh; ``clock`` is a monotonic clock in seconds. Each
    refresh recomputes whole hours on the server, so the default is 30 s: at
    2 s, refreshing cost InfluxDB more than storing (49 against 33 µs of its
    CPU per frame in ``bench/bench_ingest.py``), and queries refresh what
    they read anyway.
    """

    def __init__(
        self,
        client: InfluxClient,
        database: str,
        batch_size: int = 5000,
        settle_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settle_s < 0:
            raise ValueError(f"settle_s must be >= 0, got {settle_s}")
        self.client = client
        self.database = database
        self.batch_size = batch_size
        self.settle_s = settle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._dirty: set[tuple[str, int]] = set()  # (terminal, hour) marked by this store
        self._settle_due = clock() + settle_s

    @classmethod
    def from_settings(cls, settings: Settings) -> InfluxStore:
        client = InfluxClient(
            settings.influx_url,
            settings.influx_username,
            settings.influx_password,
            settings.influx_timeout_s,
        )
        return cls(client, settings.influx_database)

    def prepare(self) -> None:
        """Check that the database exists and this account may read it.

        Never creates it: that takes InfluxDB admin rights, which the
        service's account does not have (``mimamori-admin install`` creates
        the database once, or :meth:`create_database`). Raises
        :class:`TimeseriesError` naming the database otherwise.
        """
        try:
            self.client.query(
                self.database, [f"SHOW RETENTION POLICIES ON {quote_ident(self.database)}"]
            )
        except TimeseriesError as err:
            # Name the settings to fix, not only what the server said.
            if "database not found" in str(err):
                raise TimeseriesError(
                    f"influx_database ($MIMAMORI_INFLUX_DATABASE): {self.database!r} does not "
                    "exist: create it once (mimamori-admin install, or CREATE DATABASE as an "
                    "InfluxDB admin)"
                ) from err
            if "authorization failed" in str(err) or "not authorized" in str(err):
                raise TimeseriesError(
                    f"influx_username/influx_password ($MIMAMORI_INFLUX_USERNAME, "
                    f"$MIMAMORI_INFLUX_PASSWORD): {err}"
                ) from err
            raise TimeseriesError(f"influx_url ($MIMAMORI_INFLUX_URL): {err}") from err

    def create_database(self) -> None:
        """CREATE DATABASE (a no-op when it exists); needs an admin account."""
        self.client.query(self.database, [f"CREATE DATABASE {quote_ident(self.database)}"])

    def write(self, points: Iterable[Point]) -> int:
        """Store ``points`` (see :meth:`TimeSeriesStore.write`); the rollups they
        touch are refreshed by :meth:`settle` or by the next query that needs them."""
        return self.start_write(points)()

    def start_write(self, points: Iterable[Point]) -> Callable[[], int]:
        """:meth:`write` whose last request is answered while the caller
        works on (see :meth:`TimeSeriesStore.start_write`)."""
        unique = dedupe(points)
        sent: tuple[Callable[[], None], set[tuple[str, int]]] | None = None
        for i in range(0, len(unique), self.batch_size):
            if sent is not None:
                self._confirm(*sent)
            lines, touched = _lines_and_hours(unique[i : i + self.batch_size])
            # Marks first: if the request fails halfway, a stray mark only
            # costs a needless refresh, a missing one a stale rollup.
            marks = [f"{DIRTY},terminal={escape_tag(t)} n=1i {h}" for t, h in sorted(touched)]
            sent = self.client.send_write(self.database, marks + lines), touched

        def finish() -> int:
            if sent is not None:
                self._confirm(*sent)
            if self.clock() >= self._settle_due:
                try:
                    self.settle()
                except TimeseriesError as err:
                    # The samples and their marks are stored: only the refresh
                    # waits, for the next write or the first query that needs it.
                    log.warning("rollup refresh failed, left for later: %s", err)
            return len(unique)

        return finish

    def _confirm(self, answer: Callable[[], None], touched: set[tuple[str, int]]) -> None:
        answer()
        with self._lock:
            self._dirty |= touched

    def settle(self) -> None:
        """Refresh now the rollups of every hour this store wrote to.

        Raises :class:`TimeseriesError` if the server fails; those hours then
        stay dirty (marked in the database and here) for the next try.
        """
        with self._lock:
            pending, self._dirty = self._dirty, set()
            self._settle_due = self.clock() + self.settle_s
        hours: dict[str, set[int]] = defaultdict(set)
        for terminal, hour in sorted(pending):
            hours[terminal].add(hour)
        try:
            self._refresh(hours)
        except TimeseriesError:
            with self._lock:
                self._dirty |= pending
            raise

    def _settle_terminal(self, terminal: str) -> None:
        """Refresh the dirty hours of ``terminal``, whoever marked them."""
        (res,) = self._run(
            [f'SELECT "n" FROM {quote_ident(DIRTY)} WHERE "terminal" = {quote_str(terminal)}']  # noqa: S608
        )
        hours = {int(row[0]) for s in res.get("series", []) for row in s["values"]}
        if hours:
            self._refresh({terminal: hours})

    def _refresh(self, hours: dict[str, set[int]]) -> None:
        """Clear the marks of the given hours per terminal, recompute those
        hour buckets, then their days."""
        unmark = [
            f"DELETE FROM {quote_ident(DIRTY)} WHERE {_where(t, None, lo, hi)}"  # noqa: S608
            for t, buckets in hours.items()
            for lo, hi in runs(buckets, HOUR)
        ]
        hourly = [
            _rollup_into(HOUR, _where(t, None, lo, hi))
            for t, buckets in hours.items()
            for lo, hi in runs(buckets, HOUR)
        ]
        daily = [
            _rollup_into(DAY, _where(t, None, lo, hi))
            for t, buckets in hours.items()
            for lo, hi in runs((b // DAY * DAY for b in buckets), DAY)
        ]
        # Statements of one request run in order; days read the hours, so
        # every hourly statement must have run first.
        self._run(unmark)
        self._run(hourly)
        self._run(daily)

    def _run(self, statements: list[str]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for i in range(0, len(statements), STATEMENTS_PER_REQUEST):
            results += self.client.query(self.database, statements[i : i + STATEMENTS_PER_REQUEST])
        return results

    def _raw(self, terminal: str, channel: str, lo: int, hi: int, limit: int) -> list[Point]:
        (res,) = self._run(
            [
                f"SELECT {_POINT_FIELDS} FROM {quote_ident(SAMPLES)} "  # noqa: S608
                f"WHERE {_where(terminal, channel, lo, hi)} LIMIT {int(limit)}"
            ]
        )
        rows = (row for s in res.get("series", []) for row in s["values"])
        return [_point(terminal, channel, row) for row in rows]

    def _partials(
        self, terminal: str, channel: str, pieces: Sequence[Piece], width: int, offset: int
    ) -> list[Partial]:
        if any(tier != RAW for tier, _lo, _hi in pieces):
            self._settle_terminal(terminal)
        statements = []
        for tier, lo, hi in pieces:
            if tier == RAW:
                fields = 'min("value"), max("value"), sum("value"), count("value")'
                source = SAMPLES
            else:
                fields = 'min("min"), max("max"), sum("sum"), sum("count")'
                source = ROLLUP[tier]
            statements.append(
                f"SELECT {fields} FROM {quote_ident(source)} "  # noqa: S608
                f"WHERE {_where(terminal, channel, lo, hi)} "
                f"GROUP BY time({int(width)}s, {int(offset)}s) fill(none)"
            )
        out: list[Partial] = []
        for res in self._run(statements):
            for s in res.get("series", []):
                for b, lo_, hi_, total, n in s["values"]:
                    if n:
                        out.append((int(b), float(lo_), float(hi_), float(total), int(n)))
        return out

    def latest(self, terminal: str) -> dict[str, Point]:
        return self.latest_many([terminal]).get(terminal, {})

    def latest_many(self, terminals: Sequence[str]) -> dict[str, dict[str, Point]]:
        for t in terminals:
            check_series(t, "-")
        if not terminals:
            return {}
        which = " OR ".join(f'"terminal" = {quote_str(t)}' for t in terminals)
        (res,) = self._run(
            [
                f"SELECT {_POINT_FIELDS} FROM {quote_ident(SAMPLES)} "  # noqa: S608
                f"WHERE {which} "
                'GROUP BY "terminal", "channel" ORDER BY time DESC LIMIT 1'
            ]
        )
        out: dict[str, dict[str, Point]] = {}
        for s in res.get("series", []):
            terminal, channel = s["tags"]["terminal"], s["tags"]["channel"]
            out.setdefault(terminal, {})[channel] = _point(terminal, channel, s["values"][0])
        return out

    def _series(self) -> list[tuple[str, str]]:
        (res,) = self._run(
            [f'SELECT last("value") FROM {quote_ident(SAMPLES)} GROUP BY "terminal", "channel"']  # noqa: S608
        )
        return sorted((s["tags"]["terminal"], s["tags"]["channel"]) for s in res.get("series", []))

    def delete_before(self, ts: Instant) -> None:
        cutoff = to_epoch(ts)
        # Every bucket starting before the cutoff goes, including the one the
        # cutoff falls into; that one is then rebuilt from what is left.
        self._run(
            [
                f"DELETE FROM {quote_ident(m)} WHERE time < {cutoff}s"  # noqa: S608
                for m in (SAMPLES, ROLLUP[HOUR], ROLLUP[DAY], DIRTY)
            ]
        )
        if cutoff % DAY:
            hour, day = cutoff // HOUR * HOUR, cutoff // DAY * DAY
            self._run([_rollup_into(HOUR, f"time >= {hour}s AND time < {hour + HOUR}s")])
            self._run([_rollup_into(DAY, f"time >= {day}s AND time < {day + DAY}s")])

    def count_raw(self) -> int:
        """Samples stored, counted from raw data (diagnostics and tests)."""
        (res,) = self._run([f'SELECT count("value") FROM {quote_ident(SAMPLES)}'])  # noqa: S608
        series = res.get("series", [])
        return int(series[0]["values"][0][1]) if series else 0
