"""Ingest business logic: a batch of uplink messages in, durable effects out.

No MQTT and no Flask here: :class:`IngestService` takes a session factory,
a time-series store and plain :class:`Inbound` messages, and says for each
message whether the caller may acknowledge it (:class:`Outcome`).

A batch goes through three phases:

1. **Validate and plan** (read-only). Decode every payload and check its
   topic (``cloud.codec``); the terminal must be registered (else the
   frame is refused) and under contract on the receive date, in the
   customer's zone, with an active customer and status (else the frame is
   *parked*, see below); drop repeats by
   (terminal, boot, seq), against the ``frame_receipts`` table and within the
   batch; turn data frames into time-series points (engineering value =
   raw x 10**exp, quality, historical flag). A bad message becomes a
   *reject* here, so one poison frame never fails the batch.
2. **Write the samples** with one ``store.start_write`` call. Writes are
   idempotent per (terminal, channel, ts), so storing them *before* the
   receipts are committed means a crash in between only rewrites the same
   samples on redelivery; the other order could lose them.
3. **One transaction** for everything relational: insert the receipts
   (``ON CONFLICT DO NOTHING ... RETURNING``; a frame another worker stored
   meanwhile turns into a duplicate), lock the batch's terminals, apply each
   frame (birth, death, status, cfgack, cmdres; ``effects``), call the alarm
   engine and forwarding hooks, bump the per-terminal, per-day counters,
   wait until the store confirmed phase 2, commit. The transaction's work
   overlaps the time-series server storing the samples (InfluxDB answers
   a batch in tens of milliseconds).

Any exception from phases 2-3 propagates and the caller must acknowledge
nothing (the broker redelivers; receipts make the retry exact).

Late data: a frame is *historical* when it comes from a boot older than the
newest birth processed, or (clock synchronised) its newest time is more than
``historical_lag_s`` before receipt. Its samples keep their own timestamps.

Out of order: a data frame whose boot's birth has not been processed yet
(with shared subscriptions the birth may be in another worker's batch) is
*deferred*: not acknowledged, offered again with later batches. After
``birth_wait_s`` it is parked (``no_birth``) and the batch result names
the terminal in ``rebirths``: the worker sends it the ``rebirth`` command.
When a birth of that boot is stored, its parked frames are marked for
release in the same transaction. Only data of a birth that was *refused*
(bad channel names: it can never be valid) is refused, ``out_of_order``.

Parking (:mod:`cloud.services.parking`): a frame refused for a reason that
is not its own fault is written to ``parked_frames`` in phase 3 and then
acknowledged like a stored one; nothing else of it is applied. Frames
marked for release (by an operator, or because their birth arrived) are
applied by :meth:`IngestService.process` (at most every
``release_poll_s``, and at once after a batch released some) and by
:meth:`IngestService.idle`: as of when they first arrived, without the
contract check, then deleted from the parking store. A released frame that
still cannot be applied is parked again.

Per-terminal counters (``ingest_counters``): ``frames``, ``duplicates``,
``historical`` and ``rejected`` count frames on the UTC day of receipt;
``samples`` counts stored samples on the UTC day of *their own* timestamp, so
a day's completeness (received / expected samples) includes data that
arrived late from the outbox.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from cloud.alarms.lookups import OpenAlarms
from cloud.codec import decode_frame
from cloud.errors import InvalidValue
from cloud.ingest import effects
from cloud.ingest.channels import ChannelMap, MapCache, generation, map_of, specs_of
from cloud.ingest.counters import Reject
from cloud.ingest.hooks import ForwardSample, Hooks
from cloud.models import (
    Connectivity,
    Customer,
    FrameReceipt,
    IngestCounter,
    Terminal,
    TerminalStatus,
    as_utc,
    lock_terminals,
    utcnow,
)
from cloud.services import commands, parking
from cloud.timeseries import Point, TimeSeriesStore
from cloud.timeseries.points import MAX_TS, check_series
from protocol import frames, topics
from protocol.errors import ProtocolError

log = logging.getLogger(__name__)

# Outcome statuses. Everything but DEFERRED may be acknowledged.
STORED = "stored"
DUPLICATE = "duplicate"
PARKED = "parked"  # kept in the parking store (cloud.services.parking), applied once released
REJECTED = "rejected"
DEFERRED = "deferred"

# Reject reasons of this layer, next to protocol.errors.REASONS.
UNKNOWN_TERMINAL = "unknown_terminal"  # tid not registered
OUT_OF_ORDER = "out_of_order"  # data of a boot whose birth was refused
UNKNOWN_ALIAS = "unknown_alias"  # a value at an alias its birth did not declare
BAD_CHANNEL = "bad_channel"  # birth channel name not storable or reserved
BAD_TIME = "bad_time"  # a sample time outside what the store keeps
BAD_VALUE = "bad_value"  # raw x 10**exp is not a finite float
INTERNAL_ERROR = "internal_error"  # the frame failed the batch repeatedly (a bug)

# Series names of status frames; "$" is reserved, births may not use it.
STATUS_PREFIX = "$"
HOOKED_TYPES = ("birth", "status", "alarm", "death")
_RECEIPTS_SQLITE = sa.text(
    "SELECT r.terminal_id, r.boot, r.seq FROM json_each(:keys) AS k "
    "JOIN frame_receipts AS r ON r.terminal_id = json_extract(k.value, '$[0]') "
    "AND r.boot = json_extract(k.value, '$[1]') AND r.seq = json_extract(k.value, '$[2]')"
)
_RECEIPTS_PG = sa.text(
    "SELECT r.terminal_id, r.boot, r.seq FROM frame_receipts AS r "
    "JOIN unnest(CAST(:t AS text[]), CAST(:b AS bigint[]), CAST(:s AS bigint[])) AS k(t, b, s) "
    "ON r.terminal_id = k.t AND r.boot = k.b AND r.seq = k.s"
)
_NO_QUALITY: dict[int, int] = {}
LOG_REJECTS_PER_MINUTE = 20  # log lines per reject reason and minute


@dataclass(frozen=True, slots=True)
class Inbound:
    """One MQTT message as the worker received it.

    ``received_at`` is an aware UTC datetime taken when the message arrived;
    ``token`` is the caller's handle (the MQTT message id), untouched.
    """

    topic: str
    payload: bytes
    received_at: datetime
    token: Any = None

    @classmethod
    def of_frame(cls, frame: dict[str, Any], received_at: datetime, token: Any = None) -> Inbound:
        """The message a terminal would publish for ``frame`` (encoded, on its topic)."""
        return cls(
            topics.uplink(frame["tid"], frame["type"]), frames.encode(frame), received_at, token
        )


@dataclass
class Outcome:
    """What became of one message. ``values``: samples written for it;
    ``key``: the frame's (terminal, boot, seq) when its payload decoded."""

    status: str
    reason: str | None = None
    historical: bool = False
    values: int = 0
    key: tuple[str, int, int] | None = None

    @property
    def final(self) -> bool:
        """The caller may acknowledge the message (it will not be offered again)."""
        return self.status != DEFERRED

    def __reduce__(self) -> tuple[type[Outcome], tuple[Any, ...]]:
        # Outcomes cross the writer's pipe by the hundred per batch: as
        # constructor arguments they pickle in a tenth of a dataclass's time.
        return Outcome, (self.status, self.reason, self.historical, self.values, self.key)


@dataclass
class BatchResult:
    """Outcomes in input order, plus the rejects with their details.

    ``rebirths``: terminals to send the ``rebirth`` command (data of theirs
    was parked for want of its birth), after the batch is acknowledged;
    ``rebirth_ids`` the command's id (its ``terminal_commands`` row) for
    each that has one.
    ``released``: parked frames applied along with the batch (acknowledged
    when they were parked: not part of ``outcomes``).
    """

    outcomes: list[Outcome]
    rejects: list[Reject] = field(default_factory=list)
    rebirths: list[str] = field(default_factory=list)
    released: int = 0
    rebirth_ids: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def stored_values(self) -> int:
        return sum(o.values for o in self.outcomes if o.status == STORED)

    @property
    def historical(self) -> int:
        return sum(1 for o in self.outcomes if o.status == STORED and o.historical)


@dataclass(frozen=True)
class ServiceOptions:
    """Tunables; bad values raise ValueError at construction."""

    historical_lag_s: float = 300.0
    birth_wait_s: float = 30.0
    cache_size: int = 10_000
    release_poll_s: float = 2.0
    # Frames one terminal may have waiting for their births (unacknowledged,
    # so each holds a slot of the worker's receive window); more are parked.
    held_per_terminal: int = 20

    def __post_init__(self) -> None:
        if (
            self.historical_lag_s < 0
            or self.birth_wait_s < 0
            or self.cache_size < 1
            or self.release_poll_s <= 0
            or self.held_per_terminal < 1
        ):
            raise ValueError(f"bad ingest service options: {self}")


@dataclass(frozen=True, slots=True)
class _TerminalInfo:
    last_boot: int | None
    customer_id: int | None
    contract_start: date | None
    contract_end: date | None
    status: TerminalStatus
    timezone: str | None
    customer_active: bool | None


class _Item:
    """Working state of one message through the phases."""

    __slots__ = (
        "channels",
        "day",
        "detail",
        "forward",
        "frame",
        "historical",
        "key",
        "msg",
        "outcome",
        "points",
        "tid",
    )

    def __init__(self, msg: Inbound) -> None:
        self.msg = msg
        self.tid: str | None = None
        self.frame: dict[str, Any] | None = None
        self.outcome: Outcome | None = None
        self.points: list[Point] = []
        self.forward: list[ForwardSample] = []
        self.historical = False
        self.channels: ChannelMap | None = None  # an alarm frame's, for the engine
        self.detail = ""
        self.day = msg.received_at.astimezone(UTC).date()
        # (tid, boot, seq) once the frame decoded: the dedup key, read a
        # dozen times per frame on the way through the phases.
        self.key: tuple[str, int, int] = ("", 0, 0)


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class _Parked(_Rejected):
    """Not applicable now, not the frame's fault: keep it (``reason`` is a
    :mod:`cloud.services.parking` reason)."""


class BatchProcessor(Protocol):
    """What the worker needs of a service: :class:`IngestService` itself, or
    :class:`cloud.ingest.writer.RemoteService` running one in another process."""

    store: Any

    def process(self, batch: Sequence[Inbound]) -> BatchResult: ...

    def reject_all(self, batch: Sequence[Inbound], reason: str, detail: str) -> BatchResult: ...


@runtime_checkable
class PipelinedProcessor(BatchProcessor, Protocol):
    """A processor that takes a batch before the previous one is decided
    (:class:`cloud.ingest.writer.RemoteService`): results in submission order."""

    def submit(self, batch: Sequence[Inbound]) -> None: ...

    def result(self) -> BatchResult: ...


class IngestService:
    """Applies batches of uplink messages. Not thread-safe: one per worker thread.

    ``sessions`` makes sessions on the relational database; ``store`` is the
    time-series backend; ``hooks`` are the alarm engine and forwarding;
    ``clock`` returns the current aware UTC time (tests pass their own).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: TimeSeriesStore,
        hooks: Hooks | None = None,
        options: ServiceOptions | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.hooks = hooks or Hooks()
        self.options = options or ServiceOptions()
        self.clock = clock
        self.maps = MapCache(self.options.cache_size)
        self._logged: dict[tuple[str, int], int] = {}
        # (terminal, boot) -> monotonic expiry: boots given up waiting for
        # (park at once, rebirth already asked), and boots whose birth was refused.
        self._no_birth: dict[tuple[str, int], float] = {}
        self._bad_birth: dict[tuple[str, int], float] = {}
        # terminal -> {(boot, seq): monotonic time first deferred}: the frames
        # each terminal has waiting for a birth (bounded by held_per_terminal).
        self._held: dict[str, dict[tuple[int, int], float]] = {}
        self._release_due = 0.0  # monotonic time of the next look for released frames

    # -- public --------------------------------------------------------------

    def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """Apply ``batch``; return an outcome per message, in order. Then apply
        parked frames marked for release, if it is time to look for them.

        Raises whatever the database or the time-series store raise (then
        nothing of the batch was committed and no message may be
        acknowledged; released frames already applied stay applied).
        """
        items = [self._decode(m) for m in batch]
        # terminal -> id of its rebirth command (0 until the row is written)
        rebirths: dict[str, int] = {}
        self._run(items, release=False, rebirths=rebirths)
        outcomes: list[Outcome] = []
        rejects: list[Reject] = []
        for it in items:
            assert it.outcome is not None
            if it.frame is not None:
                it.outcome.key = it.key  # what the terminal's ack names (cloud.ingest.acks)
                if it.outcome.final:
                    self._unhold(it.key)
            outcomes.append(it.outcome)
            if it.outcome.status == REJECTED:
                reason = str(it.outcome.reason)
                rejects.append(Reject(it.msg.received_at, it.msg.topic, reason, it.detail))
        released = self._release_when_due()
        return BatchResult(
            outcomes,
            rejects,
            list(rebirths),
            released,
            rebirth_ids={tid: cid for tid, cid in rebirths.items() if cid},
        )

    def idle(self) -> int:
        """For the worker while no message comes: apply released parked frames
        if it is time to look, then bring the store's rollups up to date.
        Returns the parked frames applied. Raises as :meth:`process`."""
        released = self._release_when_due()
        settle = getattr(self.store, "settle", None)
        if settle is not None:
            settle()
        return released

    def release_parked(self, rounds: int = 4) -> int:
        """Apply parked frames marked for release (:mod:`cloud.services.parking`):
        up to ``rounds`` x ``RELEASE_BATCH`` of them, in their terminals'
        order, as of when they first arrived and without the contract check.
        Deletes each that was applied (stored, a duplicate, or refused for
        good); one that still cannot be applied was parked again, with its
        release request cleared. Returns how many were deleted.

        A round that raises is retried frame by frame; a frame that raises
        alone keeps its row, its release request cleared and the error in
        its detail (:func:`cloud.services.parking.hold`), so one bad frame
        never blocks the others. Storage errors propagate (rows untouched).
        """
        self._release_due = time.monotonic() + self.options.release_poll_s
        done = 0
        for _ in range(rounds):
            with self.sessions() as session:
                rows = parking.take_released(session)
                wire = [(r.id, Inbound(r.topic, r.payload, as_utc(r.received_at))) for r in rows]
            if not wire:
                break
            try:
                done += self._apply_released(wire)
            except (sa.exc.OperationalError, sa.exc.InterfaceError):
                raise
            except Exception:
                log.exception("applying %d released frames failed; one by one", len(wire))
                for one in wire:
                    try:
                        done += self._apply_released([one])
                    except (sa.exc.OperationalError, sa.exc.InterfaceError):
                        raise
                    except Exception as err:
                        log.exception("released parked frame %d failed; held", one[0])
                        with self.sessions() as session:
                            parking.hold(session, one[0], f"release failed: {err!r}")
                            session.commit()
            if len(rows) < parking.RELEASE_BATCH:
                break
        return done

    def _apply_released(self, wire: list[tuple[int, Inbound]]) -> int:
        items = [self._decode(m) for _, m in wire]
        self._run(items, release=True, rebirths={})
        finished = [
            pid
            for (pid, _), it in zip(wire, items, strict=True)
            if it.outcome is not None and it.outcome.status in (STORED, DUPLICATE, REJECTED)
        ]
        with self.sessions() as session:
            parking.remove(session, finished)
            session.commit()
        log.info("applied %d of %d released parked frame(s)", len(finished), len(wire))
        return len(finished)

    def _release_when_due(self) -> int:
        """:meth:`release_parked` if its poll is due; never raises (the batch
        it follows is committed and must be acknowledged): a failure is
        logged and retried at the next poll."""
        if time.monotonic() < self._release_due:
            return 0
        try:
            return self.release_parked()
        except Exception:
            log.exception("applying released parked frames failed; retried later")
            return 0

    def _run(self, items: list[_Item], *, release: bool, rebirths: dict[str, int]) -> None:
        """Phases 1-3 for decoded ``items``; every item has an outcome after."""
        if any(it.tid for it in items):
            with self.sessions() as session:
                known = set(self._plan(session, items, release=release, rebirths=rebirths))
                # End the read transaction before another connection writes:
                # an SQLite reader that saw an older snapshot cannot write.
                session.commit()
            todo = [it for it in items if it.outcome is None]
            points = [p for it in todo for p in it.points]
            stored = self.store.start_write(points) if points else _nothing_to_store
            births = {it.key[0] for it in todo if it.frame and it.frame["type"] == "birth"}
            try:
                self._commit(items, todo, known, _Once(stored), rebirths)
            finally:
                self.maps.forget(births)

    @staticmethod
    def reject_all(batch: Sequence[Inbound], reason: str, detail: str) -> BatchResult:
        """Give up on messages (they failed every attempt): count, log, ack."""
        rejects = []
        for m in batch:
            log.error("rejected message on %s: %s: %s", m.topic, reason, detail)
            rejects.append(Reject(m.received_at, m.topic, reason, detail[:500]))
        return BatchResult([Outcome(REJECTED, reason) for _ in batch], rejects)

    # -- phase 1: validate and plan -------------------------------------------

    def _decode(self, msg: Inbound) -> _Item:
        item = _Item(msg)
        try:
            item.tid, direction, kind = _parse_topic(msg.topic)
            if direction != topics.UP:
                raise ProtocolError("bad_topic", f"{msg.topic!r} is not uplink")
            frame = decode_frame(bytes(msg.payload))
            if frame["type"] != kind or frame["tid"] != item.tid:
                topics.check_frame_topic(msg.topic, frame)  # raises the precise error
        except ProtocolError as err:
            self._reject(item, err.reason, err.message or str(err))
            return item
        item.frame = frame
        item.key = (frame["tid"], frame["boot"], frame["seq"])
        return item

    def _reject(self, item: _Item, reason: str, detail: str) -> None:
        item.outcome = Outcome(REJECTED, reason)
        item.detail = detail[:500]
        # A terminal stuck sending garbage must not drown the log: a few lines
        # per reason and minute; the counters and recent rejects have the rest.
        minute = int(time.monotonic() // 60)
        key = (reason, minute)
        logged = self._logged.get(key, 0)
        if logged < LOG_REJECTS_PER_MINUTE:
            self._logged = {k: v for k, v in self._logged.items() if k[1] == minute}
            self._logged[key] = logged + 1
            log.warning("rejected frame on %s: %s: %s", item.msg.topic, reason, detail)

    def _plan(
        self, session: Session, items: list[_Item], *, release: bool, rebirths: dict[str, int]
    ) -> dict[str, _TerminalInfo]:
        tids = sorted({it.tid for it in items if it.tid})
        terminals = self._terminal_info(session, tids)
        live = [it for it in items if it.outcome is None]
        for it in live:
            info = terminals.get(it.key[0])
            if info is None:
                self._reject(it, UNKNOWN_TERMINAL, f"terminal {it.key[0]} is not registered")
            elif not release:  # released frames: the operator vouched, or they passed before
                try:
                    _check_contract(it, info)
                except _Parked as err:
                    self._park(it, err.reason, err.detail)
        live = [it for it in live if it.outcome is None]
        seen = self._existing_receipts(session, [it.key for it in live])
        for it in live:
            if it.key in seen:
                it.outcome = Outcome(DUPLICATE)
            else:
                seen.add(it.key)
        live = [it for it in live if it.outcome is None]
        births = self._batch_births(live)
        newest_boot = {tid: info.last_boot for tid, info in terminals.items()}
        for (tid, boot), _ in births.items():
            if newest_boot.get(tid) is None or boot > (newest_boot[tid] or 0):
                newest_boot[tid] = boot
        now = self.clock()
        for it in live:
            try:
                self._plan_frame(
                    session,
                    it,
                    terminals=terminals,
                    births=births,
                    newest_boot=newest_boot,
                    now=now,
                    release=release,
                    rebirths=rebirths,
                )
            except _Parked as err:
                self._park(it, err.reason, err.detail)
            except _Rejected as err:
                self._reject(it, err.reason, err.detail)
        return terminals

    def _terminal_info(self, session: Session, tids: list[str]) -> dict[str, _TerminalInfo]:
        if not tids:
            return {}
        rows = session.execute(
            sa.select(
                Terminal.id,
                Terminal.last_boot,
                Terminal.customer_id,
                Terminal.contract_start,
                Terminal.contract_end,
                Terminal.status,
                Customer.timezone,
                Customer.active,
            )
            .outerjoin(Customer, Customer.id == Terminal.customer_id)
            .where(Terminal.id.in_(tids))
        )
        return {r.id: _TerminalInfo(*r[1:]) for r in rows}

    def _park(self, item: _Item, reason: str, detail: str) -> None:
        """Keep ``item`` in the parking store (phase 3), then acknowledge it."""
        item.outcome = Outcome(PARKED, reason)
        item.detail = detail[:500]

    def _existing_receipts(
        self, session: Session, keys: list[tuple[str, int, int]]
    ) -> set[tuple[str, int, int]]:
        """Which of ``keys`` were stored before: one primary-key lookup each.

        The keys travel as one parameter (JSON for SQLite, arrays for
        PostgreSQL) so the statement text never changes: SQLite answers a
        row-value ``IN`` list with a full table scan, and a statement whose
        text grows with the batch is compiled anew every time.
        """
        if not keys:
            return set()
        if session.get_bind().dialect.name == "sqlite":
            rows = session.execute(_RECEIPTS_SQLITE, {"keys": json.dumps(keys)})
        else:
            t, b, q = (list(col) for col in zip(*keys, strict=True))
            rows = session.execute(_RECEIPTS_PG, {"t": t, "b": b, "s": q})
        return {(tid, boot, seq) for tid, boot, seq in rows}

    def _batch_births(self, live: list[_Item]) -> dict[tuple[str, int], ChannelMap]:
        """Channel maps declared by births in this batch (checked for storable names)."""
        births: dict[tuple[str, int], ChannelMap] = {}
        for it in live:
            frame = it.frame
            assert frame is not None
            if frame["type"] != "birth":
                continue
            key = (frame["tid"], frame["boot"])
            try:
                for ch in frame["channels"]:
                    _check_channel_name(ch["name"])
            except _Rejected as err:
                self._reject(it, err.reason, err.detail)
                _expire(self._bad_birth, key, 10 * self.options.birth_wait_s, self.options)
                continue
            self._no_birth.pop(key, None)
            self._bad_birth.pop(key, None)
            births[key] = map_of(specs_of(frame["channels"]))
        return births

    def _plan_frame(
        self,
        session: Session,
        item: _Item,
        *,
        terminals: dict[str, _TerminalInfo],
        births: dict[tuple[str, int], ChannelMap],
        newest_boot: dict[str, int | None],
        now: datetime,
        release: bool,
        rebirths: dict[str, int],
    ) -> None:
        frame = item.frame
        assert frame is not None
        if item.outcome is not None:  # a birth refused by _batch_births
            return
        tid, boot = frame["tid"], frame["boot"]
        ftype = frame["type"]
        newest = newest_boot.get(tid)
        historical = newest is not None and boot < newest
        if ftype == "data":
            times = frames.sample_times(frame)
            latest = times[-1]
        else:
            times = []
            latest = frame["ts"]
        if not frame["unsynced"]:
            age = item.msg.received_at.timestamp() - latest
            historical = historical or age > self.options.historical_lag_s
        if ftype == "data":
            channels = births.get((tid, boot)) or self._resolve(
                session, tid, boot, terminals[tid].last_boot
            )
            if channels is None:
                self._wait_for_birth(item, now, release, rebirths)
                return
            self._data_points(item, channels, times, historical)
        elif ftype == "status":
            item.points = _status_points(frame, historical)
        elif ftype == "alarm" and frame["alias"] is not None:
            item.channels = births.get((tid, boot)) or self._resolve(
                session, tid, boot, terminals[tid].last_boot
            )
        item.historical = historical

    def _wait_for_birth(
        self, item: _Item, now: datetime, release: bool, rebirths: dict[str, int]
    ) -> None:
        """Defer a data frame whose boot has no processed birth, or park it.

        The first frame of a (terminal, boot) that waited ``birth_wait_s`` in
        vain is parked and its terminal asked for a rebirth; further data of
        that boot is parked at once for ``birth_wait_s`` x 10 (then the next
        frame waits, and asks, again), so a terminal whose birth is lost does
        not fill the receive window with frames that each wait out the
        delay. Data of a boot whose birth was *refused* can never be read:
        refused at once (``out_of_order``).
        """
        tid, boot = item.key[0], item.key[1]
        if _live(self._bad_birth, (tid, boot)):
            raise _Rejected(OUT_OF_ORDER, f"the birth of {tid} boot {boot} was refused")
        if release or _live(self._no_birth, (tid, boot)):
            raise _Parked(parking.NO_BIRTH, f"no birth of {tid} boot {boot} yet")
        waited = (now - item.msg.received_at).total_seconds()
        if waited < self.options.birth_wait_s:
            self._hold(item)
            return
        _expire(self._no_birth, (tid, boot), 10 * self.options.birth_wait_s, self.options)
        rebirths.setdefault(tid, commands.INGEST_REBIRTH_ID)
        raise _Parked(
            parking.NO_BIRTH, f"no birth of {tid} boot {boot} after {waited:.0f}s; rebirth asked"
        )

    def _hold(self, item: _Item) -> None:
        """Defer ``item`` (unacknowledged, offered again later) unless its
        terminal holds ``held_per_terminal`` other frames already: then park
        it (``held_over_limit``), so one terminal publishing under ever new
        boots cannot fill the worker's receive window and stall the others.
        Parked frames are released with the others of their boot when the
        birth comes (:func:`cloud.services.parking.release_waiting_for_birth`)."""
        tid, boot, seq = item.key
        held = self._held.setdefault(tid, {})
        if (boot, seq) not in held and len(held) >= self.options.held_per_terminal:
            # Entries outlive their frames only if the worker dropped them
            # (every held frame is offered again and decided within the wait).
            stale = time.monotonic() - 3 * self.options.birth_wait_s - 10
            for k in [k for k, t in held.items() if t < stale]:
                del held[k]
            if len(held) >= self.options.held_per_terminal:
                raise _Parked(
                    parking.HELD_OVER_LIMIT,
                    f"{tid} has {len(held)} frames waiting for their births already",
                )
        held.setdefault((boot, seq), time.monotonic())
        item.outcome = Outcome(DEFERRED)

    def _unhold(self, key: tuple[str, int, int]) -> None:
        held = self._held.get(key[0])
        if held is not None and held.pop((key[1], key[2]), None) is not None and not held:
            del self._held[key[0]]

    def _resolve(
        self, session: Session, tid: str, boot: int, last_boot: int | None
    ) -> ChannelMap | None:
        if last_boot is None or boot > last_boot:
            return None  # its birth has not been processed yet
        channels = self.maps.get(tid, boot)
        if channels is None:
            specs = generation(session, tid, boot)
            if specs is None:
                return None
            channels = map_of(specs)
            self.maps.put(tid, boot, channels)
        return channels

    def _data_points(
        self, item: _Item, channels: ChannelMap, times: list[int], historical: bool
    ) -> None:
        frame = item.frame
        assert frame is not None
        tid = frame["tid"]
        if times[-1] >= MAX_TS:
            raise _Rejected(BAD_TIME, f"sample time {times[-1]} beyond the store's range")
        points: list[Point] = []
        forward: list[ForwardSample] = []
        keep_forward = self.hooks.enqueue_samples is not None
        for sample, ts in zip(frame["samples"], times, strict=True):
            quality = dict(sample["quality"]) if "quality" in sample else _NO_QUALITY
            for alias, raw in enumerate(sample["values"]):
                if raw is None:
                    continue
                ch = channels.get(alias)
                if ch is None:
                    raise _Rejected(UNKNOWN_ALIAS, f"{tid} boot {frame['boot']}: alias {alias}")
                value = scale(raw, ch.exp)
                if not math.isfinite(value):
                    raise _Rejected(BAD_VALUE, f"{tid} {ch.name}: {raw} x 10**{ch.exp}")
                # Every field is checked by now (see trusted_point).
                points.append(
                    _new_tuple(Point, (tid, ch.name, ts, value, quality.get(alias, 0), historical))
                )
                if keep_forward:
                    forward.append((ch.name, ch.unit, ts, value))
        item.points = points
        item.forward = forward

    # -- phase 3: one transaction ----------------------------------------------

    def _commit(
        self,
        items: list[_Item],
        todo: list[_Item],
        known: set[str],
        stored: _Once,
        rebirths: dict[str, int],
    ) -> None:
        """Phase 3; waits for ``stored`` (the samples' write) before committing
        and, whatever happens, before returning."""
        try:
            self._transaction(items, todo, known, stored, rebirths)
        except BaseException:
            stored.abandon()
            raise
        stored()  # a no-op unless the transaction had nothing to commit

    def _transaction(
        self,
        items: list[_Item],
        todo: list[_Item],
        known: set[str],
        stored: _Once,
        rebirths: dict[str, int],
    ) -> None:
        counts: dict[tuple[str, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        forward: dict[str, list[ForwardSample]] = defaultdict(list)
        repeats: list[_Item] = []
        parked: list[_Item] = []
        for it in items:
            if it.outcome is None or it.tid not in known:
                continue
            if it.outcome.status == REJECTED:
                counts[(it.tid, it.day)]["rejected"] += 1
            elif it.outcome.status == DUPLICATE:
                counts[(it.tid, it.day)]["duplicates"] += 1
                repeats.append(it)  # a resend is a sign of life too
            elif it.outcome.status == PARKED:
                parked.append(it)
        if not todo and not counts and not parked:
            return
        with self.sessions() as session:
            now = self.clock()
            # First statement writes: on SQLite it takes the write lock now, so
            # the reads below see the latest committed state.
            inserted = self._insert_receipts(session, todo)
            self._park_items(session, parked, now)
            tids = sorted(
                {it.key[0] for it in todo}
                | {it.key[0] for it in repeats}
                | {it.key[0] for it in parked}
            )
            terminals = lock_terminals(session, tids)
            if parked:
                self._parked_meanwhile(session, parked, terminals, rebirths, now)
            # The engine hears every frame it wants, plus the newest live data
            # frame of each terminal: one per batch is enough to say "online
            # now, clock synchronised" (clears offline and clock without a
            # heartbeat), and cheap once the batch is preloaded.
            engine_items = {id(it) for it in todo if _hooked(it.frame)}
            live: dict[str, _Item] = {}
            for it in todo:
                if it.frame is not None and it.frame["type"] == "data" and not it.historical:
                    live[it.key[0]] = it
            engine_items |= {id(it) for it in live.values()}
            prepare = self.hooks.prepare
            preloaded = None
            if prepare is not None and self.hooks.on_frame is not None:
                engine_tids = {it.key[0] for it in todo if id(it) in engine_items}
                if engine_tids:
                    preloaded = prepare(session, sorted(engine_tids))
            seen_at: dict[str, datetime] = {}  # plain data frames' sign of life, not yet applied
            for it in todo:
                tid = it.key[0]
                if it.key not in inserted:  # another worker stored it meanwhile
                    it.outcome = Outcome(DUPLICATE)
                    counts[(tid, it.day)]["duplicates"] += 1
                    repeats.append(it)
                    continue
                to_engine = id(it) in engine_items
                self._apply(session, terminals[tid], it, seen_at, to_engine, preloaded=preloaded)
                it.outcome = Outcome(STORED, historical=it.historical, values=len(it.points))
                row = counts[(tid, it.day)]
                row["frames"] += 1
                row["historical"] += it.historical
                points = it.points
                if points and it.frame is not None and it.frame["type"] == "data":
                    first, last = points[0].ts // 86400, points[-1].ts // 86400
                    if first == last:  # the usual frame: all its samples on one day
                        counts[(tid, _day_of(first))]["samples"] += len(points)
                    else:
                        for day, n in Counter(p.ts // 86400 for p in points).items():
                            counts[(tid, _day_of(day))]["samples"] += n
                if it.forward:
                    forward[tid].extend(it.forward)
            for tid in list(seen_at):
                _apply_seen(terminals[tid], seen_at)
            enqueue = self.hooks.enqueue_samples
            if enqueue is not None:
                # One call per terminal and batch: forwarding looks up the
                # customer's endpoints on every call.
                for tid, samples in forward.items():
                    enqueue(session, terminals[tid], samples)
            for it in repeats:
                assert it.frame is not None
                effects.seen(terminals[it.key[0]], it.frame, it.msg.received_at)
            births = [
                (it.key[0], it.key[1])
                for it in todo
                if it.key in inserted and it.frame is not None and it.frame["type"] == "birth"
            ]
            if births and parking.release_waiting_for_birth(session, births, at=now):
                self._release_due = 0.0  # apply them right after this batch
            self._upsert_counters(session, counts)
            stored()  # raises if the samples were not stored: then nothing commits
            session.commit()

    @staticmethod
    def _park_items(session: Session, parked: list[_Item], now: datetime) -> None:
        parking.park(
            session,
            [
                parking.Parcel(
                    it.key[0],
                    it.key[1],
                    it.key[2],
                    it.msg.topic,
                    bytes(it.msg.payload),
                    it.msg.received_at,
                    str(it.outcome.reason if it.outcome else ""),
                    it.detail,
                )
                for it in parked
            ],
            at=now,
        )

    def _parked_meanwhile(
        self,
        session: Session,
        parked: list[_Item],
        terminals: dict[str, Terminal],
        rebirths: dict[str, int],
        now: datetime,
    ) -> None:
        """After the terminals are locked: release what was parked for want of
        a birth (``no_birth``, or held over the terminal's bound while waiting
        for one) that another worker has stored meanwhile (its transaction
        committed before our lock, so it could not see our rows), and record
        the rebirths this batch asks for as commands (actor ``system``), so
        operators see them in the terminal's command history and the
        terminal's answer lands on the row."""
        waiting = sorted(
            {
                (it.key[0], it.key[1])
                for it in parked
                if it.outcome is not None
                and it.outcome.reason in (parking.NO_BIRTH, parking.HELD_OVER_LIMIT)
            }
        )
        arrived = [
            (tid, boot)
            for tid, boot in waiting
            if tid in terminals
            and self._resolve(session, tid, boot, terminals[tid].last_boot) is not None
        ]
        if arrived and parking.release_waiting_for_birth(session, arrived, at=now):
            self._release_due = 0.0
        for tid in rebirths:
            terminal = terminals.get(tid)
            if terminal is None:
                continue
            command = commands.record_system_command(
                session, terminal, "rebirth", now=now, why="data parked: its birth is missing"
            )
            rebirths[tid] = command.id

    def _apply(
        self,
        session: Session,
        terminal: Terminal,
        item: _Item,
        seen_at: dict[str, datetime],
        to_engine: bool,
        *,
        preloaded: OpenAlarms | None,
    ) -> None:
        frame = item.frame
        assert frame is not None
        ftype = frame["type"]
        at = item.msg.received_at
        on_frame = self.hooks.on_frame
        hooked = on_frame is not None and to_engine
        if ftype == "data" and not hooked:
            # A plain data frame's only effect on the terminal row is its newest
            # time of life, which nothing reads before this terminal's next
            # other frame or the commit. Kept out of the session until then, the
            # flush before each alarm-engine query writes one terminal row
            # instead of every terminal the batch has touched so far.
            if terminal.id not in seen_at or seen_at[terminal.id] < at:
                seen_at[terminal.id] = at
        else:
            _apply_seen(terminal, seen_at)
            if ftype == "birth":
                effects.birth(session, terminal, frame, at)
            elif ftype == "death":
                effects.death(terminal, frame, at)
            elif ftype == "cfgack":
                effects.cfgack(session, terminal, frame, at)
            elif ftype == "cmdres":
                effects.cmdres(session, terminal, frame, at)
            elif ftype == "otastat":
                effects.otastat(terminal, session, frame, at)
            effects.seen(terminal, frame, at)
        if (
            ftype != "death"
            and not item.historical
            and effects.is_current_boot(terminal, frame["boot"])
        ):
            # A terminal we hear from live is online, whatever we concluded before.
            effects.set_connectivity(terminal, Connectivity.ONLINE, at)
        if hooked:
            assert on_frame is not None
            on_frame(
                session,
                terminal,
                frame,
                at,
                item.historical,
                channels=item.channels,
                preloaded=preloaded,
            )

    def _insert_receipts(self, session: Session, todo: list[_Item]) -> set[tuple[str, int, int]]:
        """Insert the receipts of ``todo``; return the keys this call inserted.

        Must be the session's first statement. The usual case, every receipt
        new, is one plain ``executemany`` whose row count says so; RETURNING
        costs SQLAlchemy a round of per-row work. When the count falls short
        (another worker stored some of these frames meanwhile) the
        transaction is rolled back and the insert repeated with RETURNING to
        learn which keys are ours.
        """
        if not todo:
            return set()
        table = FrameReceipt.__table__
        dialect = session.get_bind().dialect
        if dialect.supports_sane_multi_rowcount:
            # Straight to the driver: SQLAlchemy's per-row parameter handling
            # cost more than the insert. Only received_at needs converting.
            to_db = table.c.received_at.type.bind_processor(dialect)
            q = "?" if dialect.name == "sqlite" else "%s"
            sql = (
                "INSERT INTO frame_receipts (terminal_id, boot, seq, received_at) "  # noqa: S608
                f"VALUES ({q}, {q}, {q}, {q}) "
                "ON CONFLICT (terminal_id, boot, seq) DO NOTHING"
            )
            at = [it.msg.received_at for it in todo]
            params = [
                (*it.key, to_db(a) if to_db is not None else a)
                for it, a in zip(todo, at, strict=True)
            ]
            result = session.connection().exec_driver_sql(sql, params)
            if getattr(result, "rowcount", -1) == len(params):
                return {it.key for it in todo}
            session.rollback()
        insert = _insert_for(session)(table).on_conflict_do_nothing(
            index_elements=["terminal_id", "boot", "seq"]
        )
        rows = [
            {
                "terminal_id": it.key[0],
                "boot": it.key[1],
                "seq": it.key[2],
                "received_at": it.msg.received_at,
            }
            for it in todo
        ]
        stmt = insert.returning(table.c.terminal_id, table.c.boot, table.c.seq)
        return {(t, b, s) for t, b, s in session.execute(stmt, rows)}

    @staticmethod
    def _upsert_counters(session: Session, counts: dict[tuple[str, date], dict[str, int]]) -> None:
        if not counts:
            return
        table = IngestCounter.__table__
        names = ("frames", "samples", "duplicates", "historical", "rejected")
        rows = [
            {"terminal_id": tid, "day": day, **{n: c.get(n, 0) for n in names}}
            for (tid, day), c in sorted(counts.items())
        ]
        stmt = _insert_for(session)(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["terminal_id", "day"],
            set_={n: table.c[n] + stmt.excluded[n] for n in names},
        )
        session.execute(stmt, rows)


# -- maintenance ---------------------------------------------------------------


def prune_receipts(session: Session, before: datetime) -> int:
    """Delete dedup receipts received before ``before``; return how many.

    For the scheduler's retention job. Choose ``before`` older than anything
    that can still be redelivered: a terminal's outbox (days, if it was
    offline that long) plus the broker's session expiry. The caller commits.
    """
    result = session.execute(sa.delete(FrameReceipt).where(FrameReceipt.received_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


# -- helpers -------------------------------------------------------------------


def scale(raw: int | float, exp: int) -> float:
    """Engineering value of a raw count: raw x 10**exp, correctly rounded
    (division for negative exponents: 1234 / 100 is 12.34, 1234 * 0.01 is not)."""
    if exp >= 0:
        return float(raw * 10**exp)
    return raw / 10**-exp


def trusted_point(
    terminal: str, channel: str, ts: int, value: float, *, quality: int, historical: bool
) -> Point:
    """The :class:`Point` ``Point(terminal, channel, ts, value, quality,
    historical)`` without running its checks again.

    Only for values ingest has checked already: series names when the birth
    was accepted (``_check_channel_name``), ``ts`` below ``MAX_TS``, a
    finite float value, a quality code of the protocol. Point's own
    validation costs more than everything else ingest does per sample.
    """
    return _new_tuple(Point, (terminal, channel, ts, value, quality, historical))


_new_tuple = tuple.__new__

# A fleet publishes on a few topics per terminal: parse each once. Malformed
# topics raise, and exceptions are not cached.
_parse_topic = functools.lru_cache(maxsize=65536)(topics.parse)


def _nothing_to_store() -> int:
    return 0


class _Once:
    """The wait for a time-series write (``TimeSeriesStore.start_write``),
    done at most once."""

    def __init__(self, wait: Callable[[], int]) -> None:
        self._wait: Callable[[], int] | None = wait

    def __call__(self) -> None:
        wait, self._wait = self._wait, None
        if wait is not None:
            wait()

    def abandon(self) -> None:
        """The transaction failed: still collect the write's answer (the store
        must be free for the next batch), logging instead of raising."""
        try:
            self()
        except Exception as err:  # the transaction's error is the one to report
            log.warning("the batch's time-series write failed as well: %s", err)


def _check_contract(item: _Item, info: _TerminalInfo) -> None:
    """Raise :class:`_Parked` unless ``info``'s terminal may send ``item`` on
    the day it arrived (in the customer's zone): active, with an active
    customer and a contract covering that day."""
    tid = item.key[0]
    if info.status != TerminalStatus.ACTIVE:
        raise _Parked(parking.NOT_CONTRACTED, f"terminal {tid} is {info.status}")
    if info.customer_id is None or info.contract_start is None or info.timezone is None:
        raise _Parked(parking.NOT_CONTRACTED, f"terminal {tid} has no contract")
    if not info.customer_active:
        raise _Parked(parking.NOT_CONTRACTED, f"the customer of terminal {tid} is inactive")
    day = item.msg.received_at.astimezone(ZoneInfo(info.timezone)).date()
    if day < info.contract_start or (info.contract_end and day > info.contract_end):
        raise _Parked(
            parking.NOT_CONTRACTED,
            f"terminal {tid}: {day} outside contract "
            f"{info.contract_start}..{info.contract_end or ''}",
        )


def _live(cache: dict[tuple[str, int], float], key: tuple[str, int]) -> bool:
    """``key`` is in ``cache`` (key -> monotonic expiry) and not expired."""
    until = cache.get(key)
    return until is not None and until > time.monotonic()


def _expire(
    cache: dict[tuple[str, int], float],
    key: tuple[str, int],
    seconds: float,
    options: ServiceOptions,
) -> None:
    """Put ``key`` in ``cache`` for ``seconds``; drop expired keys when it grows."""
    now = time.monotonic()
    if len(cache) > options.cache_size:
        for k in [k for k, v in cache.items() if v <= now]:
            del cache[k]
    cache[key] = now + seconds


def _apply_seen(terminal: Terminal, seen_at: dict[str, datetime]) -> None:
    """Apply (and forget) the sign of life ``_apply`` kept back for ``terminal``."""
    at = seen_at.pop(terminal.id, None)
    if at is not None:
        effects.seen(terminal, {"type": "data"}, at)


def _hooked(frame: dict[str, Any] | None) -> bool:
    """Whether the alarm engine wants ``frame`` (see :mod:`cloud.ingest.hooks`)."""
    return frame is not None and (frame["type"] in HOOKED_TYPES or bool(frame["unsynced"]))


def _check_channel_name(name: str) -> None:
    if name.startswith(STATUS_PREFIX):
        raise _Rejected(BAD_CHANNEL, f"channel name {name!r}: {STATUS_PREFIX!r} is reserved")
    try:
        check_series("t", name)
    except InvalidValue as err:
        raise _Rejected(BAD_CHANNEL, str(err)) from err


def _status_points(frame: dict[str, Any], historical: bool) -> list[Point]:
    """A heartbeat's figures as series ``$uptime``, ``$queued``, ``$dropped``,
    ``$heap``, ``$rssi`` and ``$err.<name>`` (names that fit a series name)."""
    tid, ts = frame["tid"], frame["ts"]
    figures: list[tuple[str, int]] = [
        ("uptime", frame["uptime"]),
        ("queued", frame["queued"]),
        ("dropped", frame["dropped"]),
        ("heap", frame["heap"]),
    ]
    if frame["rssi"] is not None:
        figures.append(("rssi", frame["rssi"]))
    figures.extend(("err." + name, n) for name, n in sorted(frame["errors"].items()))
    points = []
    for name, value in figures:
        try:
            points.append(Point(tid, STATUS_PREFIX + name, ts, value, 0, historical))
        except InvalidValue:
            log.info("status figure %r of %s not storable as a series; skipped", name, tid)
    return points


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=64)
def _day_of(days: int) -> date:
    """The UTC date ``days`` days after 1970-01-01."""
    return date.fromordinal(_EPOCH_ORDINAL + days)


def _insert_for(session: Session) -> Any:
    """The dialect's INSERT (both have ON CONFLICT and RETURNING)."""
    name = session.get_bind().dialect.name
    if name == "sqlite":
        return sqlite.insert
    if name == "postgresql":
        return postgresql.insert
    raise InvalidValue(f"unsupported database {name}")
