"""IngestService on a real migrated database (SQLite here; PostgreSQL too in
tests/integration/test_ingest_service_db.py, which reruns these tests).

Messages are built the way terminals build them (``frames.encode`` on the
right topic); the store is the real SQL time-series backend on the same
database. The hooks are the service's collaborators (alarm engine,
forwarding); where a test needs to see what they were given, it passes a
recording function.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from cloud import db
from cloud.ingest.hooks import Hooks
from cloud.ingest.service import (
    BAD_CHANNEL,
    DEFERRED,
    DUPLICATE,
    LOG_REJECTS_PER_MINUTE,
    OUT_OF_ORDER,
    PARKED,
    REJECTED,
    STORED,
    UNKNOWN_ALIAS,
    UNKNOWN_TERMINAL,
    Inbound,
    IngestService,
    ServiceOptions,
    prune_receipts,
    scale,
    trusted_point,
)
from cloud.models import (
    AuditEntry,
    Channel,
    ConfigStatus,
    Connectivity,
    Customer,
    FrameReceipt,
    IngestCounter,
    ParkedFrame,
    Terminal,
    TerminalCommand,
    TerminalStatus,
)
from cloud.services.parking import HELD_OVER_LIMIT, NO_BIRTH, NOT_CONTRACTED
from cloud.timeseries import Point, SqlStore
from protocol import frames, topics
from tests.support import ingest as S


@pytest.fixture
def db_url(tmp_path: Any, tmp_path_factory: Any) -> str:
    return S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())


@dataclass
class Env:
    sessions: sessionmaker[Session]
    store: SqlStore
    now: datetime = field(default_factory=lambda: S.at(S.T0 + 30))
    hooks: Hooks = field(default_factory=Hooks)
    options: ServiceOptions = field(default_factory=ServiceOptions)
    _service: IngestService | None = None

    @property
    def service(self) -> IngestService:
        if self._service is None:
            self._service = IngestService(
                self.sessions, self.store, self.hooks, self.options, clock=lambda: self.now
            )
        return self._service

    def send(self, *items: dict[str, Any] | Inbound, at: datetime | None = None) -> list[Any]:
        """Process frames (or prepared messages) received at ``at`` (default: now)."""
        msgs = [m if isinstance(m, Inbound) else Inbound.of_frame(m, at or self.now) for m in items]
        result = self.service.process(msgs)
        self.rebirths.extend(result.rebirths)
        self.rebirth_ids.update(result.rebirth_ids)
        return [(o.status, o.reason) for o in result.outcomes]

    rebirths: list[str] = field(default_factory=list)
    rebirth_ids: dict[str, int] = field(default_factory=dict)

    def parked(self, tid: str) -> list[tuple[int, int, str, bool]]:
        """(boot, seq, reason, release requested) of ``tid``'s parked frames."""
        with self.sessions() as s:
            rows = s.scalars(
                sa.select(ParkedFrame)
                .where(ParkedFrame.terminal_id == tid)
                .order_by(ParkedFrame.boot, ParkedFrame.seq)
            )
            return [(r.boot, r.seq, r.reason, r.release_requested_at is not None) for r in rows]

    def release(self, tid: str) -> None:
        """What an operator's release does to the rows (cloud.services.parking)."""
        with self.sessions() as s:
            s.execute(
                sa.update(ParkedFrame)
                .where(ParkedFrame.terminal_id == tid)
                .values(release_requested_at=self.now, release_requested_by="op@example.com")
            )
            s.commit()

    def points(self) -> dict[tuple[str, str, int], Point]:
        return {p.key: p for p in self.store.iter_points()}

    def terminal(self, tid: str) -> Terminal:
        with self.sessions() as s:
            t = s.get(Terminal, tid)
            assert t is not None
            return t

    def counters(self, tid: str) -> dict[date, dict[str, int]]:
        with self.sessions() as s:
            rows = s.scalars(sa.select(IngestCounter).where(IngestCounter.terminal_id == tid))
            return {
                r.day: {
                    "frames": r.frames,
                    "samples": r.samples,
                    "duplicates": r.duplicates,
                    "historical": r.historical,
                    "rejected": r.rejected,
                }
                for r in rows
            }


@pytest.fixture
def env(db_url: str) -> Iterator[Env]:
    engine = db.make_engine(db_url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        S.seed(s, ["T1", "T2"])
    yield Env(sessions, SqlStore(engine))
    engine.dispose()


def test_birth_then_data_stores_engineering_values_with_quality(env: Env) -> None:
    rows = [[12, None, 1234, 123456, 1015, 253], [13, 4, 99999]]
    quality = {0: [[1, 1]], 1: [[2, 2], [5, 3]]}
    out = env.send(
        S.birth("T1", 3, 41, cfg=3),
        S.data("T1", 3, 42, S.T0, rows, dt=60, quality=quality),
    )
    assert out == [(STORED, None), (STORED, None)]
    pts = env.points()
    assert pts[("T1", "io", S.T0)].value == 1.2
    assert pts[("T1", "kw", S.T0)].value == 12.34
    assert pts[("T1", "kwh", S.T0)].value == 12345.6
    assert pts[("T1", "t", S.T0)].value == 25.3
    assert ("T1", "ior", S.T0) not in pts  # null: not sampled
    assert pts[("T1", "kw", S.T0 + 60)].value == 999.99
    assert pts[("T1", "kw", S.T0 + 60)].quality == frames.OUT_OF_RANGE
    assert pts[("T1", "io", S.T0 + 60)].quality == 0
    assert not any(p.historical for p in pts.values())
    assert len([k for k in pts if not k[1].startswith("$")]) == 5 + 3
    t = env.terminal("T1")
    assert (t.firmware_version, t.config_version, t.last_boot) == ("1.0.0", 3, 3)
    assert t.connectivity == Connectivity.ONLINE
    assert t.last_seen_at == env.now
    with env.sessions() as s:
        chans = s.scalars(sa.select(Channel).where(Channel.retired_at.is_(None))).all()
        assert sorted((c.alias, c.name, c.unit, c.kind, c.exp) for c in chans) == [
            (c["alias"], c["name"], c["unit"], c["kind"], c["exp"]) for c in S.CHANNELS
        ]


DEVICES = [
    {"name": "leak1", "model": "IM-100", "status": "reference"},
    {"name": "pm1", "model": "SDM120", "status": "documented"},
]


def test_ingest_keeps_the_newest_births_devices_and_forgets_them_when_it_stops_saying(
    env: Env,
) -> None:
    assert env.terminal("T1").devices is None  # never said
    assert env.send(dict(S.birth("T1", 3, 41), devices=DEVICES)) == [(STORED, None)]
    assert env.terminal("T1").devices == DEVICES
    # a late birth of an older boot does not rewrite the current wiring
    old = [{"name": "x", "model": "PM-300", "status": "test"}]
    env.send(dict(S.birth("T1", 2, 9), devices=old))
    assert env.terminal("T1").devices == DEVICES
    # firmware that does not send devices (a downgrade): unknown, not the old list
    env.send(S.birth("T1", 4, 1))
    assert env.terminal("T1").devices is None


def test_scale_is_correctly_rounded() -> None:
    assert scale(1234, -2) == 12.34
    assert scale(3, -1) == 0.3
    assert scale(7, 3) == 7000.0
    assert scale(1.5, -1) == 0.15
    assert scale(-(2**63), 9) == float(-(2**63) * 10**9)


def test_repeats_are_dropped_within_a_batch_and_across_batches(env: Env) -> None:
    term = S.Terminal("T1", boot=2)
    b, d1, d2 = term.birth(), term.data(), term.data()
    assert env.send(b, d1, d1) == [(STORED, None), (STORED, None), (DUPLICATE, None)]
    assert env.send(d1, d2, b) == [(DUPLICATE, None), (STORED, None), (DUPLICATE, None)]
    pts = env.points()
    assert {k: v.value for k, v in pts.items() if not k[1].startswith("$")} == (
        S.expected_values([term])
    )
    with env.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) == 3
    day = date(2025, 11, 27)
    assert env.counters("T1")[day] == {
        "frames": 3,
        "samples": 12,
        "duplicates": 3,
        "historical": 0,
        "rejected": 0,
    }


def test_failed_batch_commits_nothing_and_the_retry_stores_once(env: Env) -> None:
    calls: list[str] = []

    def flaky_engine(
        session: Session,
        terminal: Terminal,
        frame: dict,
        at: datetime,
        historical: bool,
        *,
        channels: Any = None,
        preloaded: Any = None,
    ) -> None:
        calls.append(frame["type"])
        if frame["type"] == "alarm" and calls.count("alarm") == 1:
            raise RuntimeError("engine bug on first try")

    env.hooks = Hooks(on_frame=flaky_engine)
    term = S.Terminal("T1")
    batch = [Inbound.of_frame(f, env.now) for f in (term.birth(), term.data())]
    batch.append(Inbound.of_frame(S.alarm("T1", 1, term.seq), env.now))
    with pytest.raises(RuntimeError):
        env.service.process(batch)
    with env.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Channel)) == 0
    assert env.terminal("T1").last_boot is None
    result = env.service.process(batch)
    assert [o.status for o in result.outcomes] == [STORED, STORED, STORED]
    assert result.stored_values == 6
    assert env.counters("T1")[date(2025, 11, 27)]["frames"] == 3
    assert env.counters("T1")[date(2025, 11, 27)]["samples"] == 6


def test_unknown_terminals_are_rejected_and_uncontracted_ones_parked(env: Env) -> None:
    with env.sessions() as s:
        # Contract ends 2025-11-27 in Tokyo, which ends at 15:00 UTC.
        S.seed(s, ["T3"], contract_end=date(2025, 11, 27))
        s.add(Terminal(id="STOCK"))  # registered, never sold
        s.commit()
    before_midnight_jst = datetime(2025, 11, 27, 14, 59, tzinfo=UTC)
    after_midnight_jst = datetime(2025, 11, 27, 15, 0, tzinfo=UTC)
    assert env.send(S.birth("T3", 1, 0), at=before_midnight_jst) == [(STORED, None)]
    assert env.send(S.status("T3", 1, 1), at=after_midnight_jst) == [(PARKED, NOT_CONTRACTED)]
    assert env.send(S.birth("NOPE", 1, 0), S.birth("STOCK", 1, 0)) == [
        (REJECTED, UNKNOWN_TERMINAL),
        (PARKED, NOT_CONTRACTED),
    ]
    assert env.counters("T3")[date(2025, 11, 27)]["rejected"] == 0
    assert env.parked("T3") == [(1, 1, NOT_CONTRACTED, False)]
    assert env.parked("STOCK") == [(1, 0, NOT_CONTRACTED, False)]
    with env.sessions() as s:
        assert s.get(Terminal, "STOCK").last_seen_at is None
    assert not any(k[0] == "T3" and k[1] == "$uptime" for k in env.points())


def test_suspended_terminal_and_inactive_customer_are_parked(env: Env) -> None:
    with env.sessions() as s:
        s.get(Terminal, "T1").status = TerminalStatus.SUSPENDED
        s.get(Customer, s.get(Terminal, "T2").customer_id).active = False
        s.commit()
    assert env.send(S.birth("T1", 1, 0)) == [(PARKED, NOT_CONTRACTED)]
    with env.sessions() as s:
        s.get(Terminal, "T2").customer_id = None
        s.commit()
    assert env.send(S.birth("T2", 1, 0)) == [(PARKED, NOT_CONTRACTED)]
    assert env.parked("T1") == [(1, 0, NOT_CONTRACTED, False)]


def test_a_released_frame_is_applied_as_of_its_arrival_and_leaves_the_store(env: Env) -> None:
    before = datetime(2024, 12, 31, 12, 0, tzinfo=UTC)  # before the contract (2025-01-01 JST)
    term = S.Terminal("T1")
    frames_sent = [term.birth(), term.data(), term.data()]
    assert env.send(*frames_sent, at=before) == [(PARKED, NOT_CONTRACTED)] * 3
    resent = env.send(frames_sent[1], at=before)  # its ack was lost: still one row
    assert resent == [(PARKED, NOT_CONTRACTED)]
    assert [p[1] for p in env.parked("T1")] == [f["seq"] for f in frames_sent]
    assert not env.points()
    env.release("T1")
    assert env.service.release_parked() == 3
    assert env.parked("T1") == []
    samples = {k: p.value for k, p in env.points().items() if not k[1].startswith("$")}
    assert samples == S.expected_values([term])
    # Counted on the day the frames first arrived, like any late data.
    assert env.counters("T1")[date(2024, 12, 31)]["frames"] == 3
    assert env.terminal("T1").last_boot == 1


def test_released_frames_that_still_cannot_be_applied_stay_parked(env: Env) -> None:
    lost = S.data("T1", 4, 7, S.T0, [[1] * 6])
    env.options = ServiceOptions(birth_wait_s=0)
    assert env.send(lost) == [(PARKED, NO_BIRTH)]
    env.release("T1")
    assert env.service.release_parked() == 0
    assert env.parked("T1") == [(4, 7, NO_BIRTH, False)]  # request cleared: no retry loop


def test_one_poison_frame_does_not_poison_the_batch(env: Env) -> None:
    term = S.Terminal("T1")
    good = [term.birth(), term.data()]
    birth_payload = frames.encode(S.birth("T1", 1, 99))
    poison = [
        Inbound("mm/v1/T1/up/data", b"\xff", env.now),
        Inbound("mm/v1/T1/up/data", b"\x00" * 5000, env.now),
        Inbound("mm/v1/T2/up/birth", birth_payload, env.now),  # T2 speaking for T1
        Inbound("mm/v1/T1/up/status", birth_payload, env.now),  # kind is not the type
        Inbound("mm/v1/T1/down/config", birth_payload, env.now),
        Inbound("elsewhere/T1", birth_payload, env.now),
        Inbound.of_frame(S.data("T1", 1, 50, S.T0, [[1, 2, 3, 4, 5, 6, 7]]), env.now),
        Inbound.of_frame(
            S.birth("T2", 1, 0, channels=[{**S.CHANNELS[0], "name": "$queued"}]), env.now
        ),
    ]
    msgs = [Inbound.of_frame(good[0], env.now), *poison, Inbound.of_frame(good[1], env.now)]
    result = env.service.process(msgs)
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (STORED, None),
        (REJECTED, "unsupported_cbor"),
        (REJECTED, "too_large"),
        (REJECTED, "tid_mismatch"),
        (REJECTED, "bad_topic"),
        (REJECTED, "bad_topic"),
        (REJECTED, "bad_topic"),
        (REJECTED, UNKNOWN_ALIAS),
        (REJECTED, BAD_CHANNEL),
        (STORED, None),
    ]
    assert [r.reason for r in result.rejects] == [o.reason for o in result.outcomes[1:-1]]
    assert all(r.topic and r.detail for r in result.rejects)
    assert len([k for k in env.points() if k[0] == "T1" and not k[1].startswith("$")]) == 6


def test_late_data_is_historical_and_keeps_its_timestamps(env: Env) -> None:
    env.options = ServiceOptions(historical_lag_s=300)
    received = S.at(S.T0 + 600)
    fresh_ts = S.T0 + 400
    out = env.send(
        S.birth("T1", 1, 0, fresh_ts),
        S.data("T1", 1, 10, S.T0, [[1, 1, 1, 1, 1, 1]]),  # 600 s old: late
        S.data("T1", 1, 11, fresh_ts, [[2, 2, 2, 2, 2, 2]]),  # 200 s old: live
        at=received,
    )
    assert out == [(STORED, None)] * 3
    pts = env.points()
    assert pts[("T1", "io", S.T0)].historical
    assert not pts[("T1", "io", fresh_ts)].historical
    assert env.counters("T1")[date(2025, 11, 27)]["historical"] == 1
    # An unsynchronised clock says nothing about lateness.
    assert env.send(S.data("T1", 1, 12, 1000, [[3] * 6], unsynced=True), at=received) == [
        (STORED, None)
    ]
    assert not env.points()[("T1", "io", 1000)].historical


def test_outbox_drain_after_reboot_uses_the_older_boots_channels(env: Env) -> None:
    """Reboot while offline: the fresh birth (boot 5) comes first, then the
    outbox drains boot 4's birth and data, then boot 5's data."""
    old_channels = [{**c, "exp": 0} for c in S.CHANNELS]  # boot 4 sent whole units
    env.send(S.birth("T1", 4, 0, channels=old_channels), at=S.at(S.T0 - 7200))
    now = S.at(S.T0 + 3600)
    out = env.send(
        S.birth("T1", 5, 0, S.T0 + 3600),
        S.birth("T1", 4, 0, S.T0 - 7200, channels=old_channels),  # the outbox's copy
        S.data("T1", 4, 1, S.T0 - 60, [[10, 10, 10, 10, 10, 10]]),
        S.data("T1", 5, 1, S.T0 + 3590, [[10, 10, 10, 10, 10, 10]]),
        at=now,
    )
    assert out == [(STORED, None), (DUPLICATE, None), (STORED, None), (STORED, None)]
    pts = env.points()
    assert pts[("T1", "io", S.T0 - 60)].value == 10.0  # boot 4: exp 0
    assert pts[("T1", "io", S.T0 - 60)].historical  # older boot
    assert pts[("T1", "io", S.T0 + 3590)].value == 1.0  # boot 5: exp -1
    assert not pts[("T1", "io", S.T0 + 3590)].historical
    # Boot 4's data arriving in a later batch still finds boot 4's table.
    assert env.send(S.data("T1", 4, 2, S.T0 - 30, [[20] * 6]), at=now) == [(STORED, None)]
    assert env.points()[("T1", "io", S.T0 - 30)].value == 20.0
    with env.sessions() as s:
        current = s.scalars(
            sa.select(Channel.exp).where(Channel.retired_at.is_(None), Channel.terminal_id == "T1")
        ).all()
    assert set(current) == {-1, -2}  # boot 5's table is the current one
    assert env.terminal("T1").last_boot == 5


def test_a_late_birth_of_an_unseen_older_boot_records_its_table(env: Env) -> None:
    env.send(S.birth("T1", 7, 0))
    odd = [{**S.CHANNELS[0], "exp": 2}]
    assert env.send(S.birth("T1", 6, 0, channels=odd)) == [(STORED, None)]
    assert env.send(S.data("T1", 6, 1, S.T0, [[5]])) == [(STORED, None)]
    assert env.points()[("T1", "io", S.T0)].value == 500.0
    assert env.send(S.data("T1", 7, 1, S.T0, [[5]])) == [(STORED, None)]
    assert env.points()[("T1", "io", S.T0)].value == 0.5  # boot 7 overwrote: same key


def test_data_before_its_birth_waits_then_is_parked_and_a_rebirth_asked(env: Env) -> None:
    env.options = ServiceOptions(birth_wait_s=10)
    first = Inbound.of_frame(S.data("T1", 1, 1, S.T0, [[1] * 6]), env.now)
    assert env.send(first) == [(DEFERRED, None)]
    # Within the wait the birth arrives (another worker, or later in the stream).
    assert env.send(S.birth("T1", 1, 0), first) == [(STORED, None), (STORED, None)]
    assert ("T1", "io", S.T0) in env.points()
    assert env.rebirths == []

    lost = Inbound.of_frame(S.data("T1", 2, 1, S.T0, [[7] * 6]), env.now)
    assert env.send(lost) == [(DEFERRED, None)]
    env.now += timedelta(seconds=11)
    assert env.send(lost) == [(PARKED, NO_BIRTH)]
    assert env.rebirths == ["T1"]
    # The request is a command like a person's, so operators see it; the
    # frame carries its row's id, so the terminal's answer lands there.
    with env.sessions() as s:
        [cmd] = s.scalars(sa.select(TerminalCommand).where(TerminalCommand.terminal_id == "T1"))
        assert (cmd.name, cmd.requested_by, cmd.state) == ("rebirth", "system", "queued")
        assert env.rebirth_ids == {"T1": cmd.id}
        audit = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "terminal.cmd.rebirth")
        ).one()
        assert (audit.actor, audit.details["id"]) == ("system", cmd.id)
    # Having given up on boot 2, its next frames are parked at once, without
    # asking again...
    assert env.send(S.data("T1", 2, 2, S.T0 + 60, [[8] * 6])) == [(PARKED, NO_BIRTH)]
    assert env.rebirths == ["T1"]
    assert ("T1", "io", S.T0 + 60) not in env.points()
    # ...until its birth turns up (the answer to the rebirth): then they are
    # applied right after that batch, and leave the parking store.
    assert env.send(S.birth("T1", 2, 5), S.data("T1", 2, 6, S.T0 + 120, [[9] * 6])) == [
        (STORED, None),
        (STORED, None),
    ]
    assert env.parked("T1") == []
    pts = env.points()
    assert pts[("T1", "io", S.T0)].value == 0.7
    assert pts[("T1", "io", S.T0 + 60)].value == 0.8
    assert pts[("T1", "io", S.T0 + 120)].value == 0.9
    assert env.counters("T1")[date(2025, 11, 27)]["rejected"] == 0


def test_a_birth_another_worker_stored_meanwhile_releases_what_is_parked(env: Env) -> None:
    env.options = ServiceOptions(birth_wait_s=0)
    other = IngestService(env.sessions, env.store, clock=lambda: env.now)
    # This worker plans the data frame (no birth yet) while the other worker
    # stores the birth: simulated by storing it between the two phases.
    service = env.service
    plan = service._plan

    def plan_then_birth(*args: Any, **kwargs: Any) -> Any:
        out = plan(*args, **kwargs)
        other.process([Inbound.of_frame(S.birth("T1", 3, 0), env.now)])
        return out

    service._plan = plan_then_birth  # type: ignore[method-assign]
    assert env.send(S.data("T1", 3, 1, S.T0, [[4] * 6])) == [(PARKED, NO_BIRTH)]
    # Parked, but marked for release under the terminal's lock (the birth is
    # there), and so applied right after the batch.
    assert env.parked("T1") == []
    assert env.points()[("T1", "io", S.T0)].value == 0.4


def test_frames_held_over_the_bound_are_released_by_a_birth_stored_meanwhile(env: Env) -> None:
    """Two workers share the subscription: the birth goes to one, the data
    to the other, which parks what passes its per-terminal bound while the
    birth is being stored. Those frames must not wait for an operator."""
    env.options = ServiceOptions(birth_wait_s=60, held_per_terminal=1)
    other = IngestService(env.sessions, env.store, clock=lambda: env.now)
    service = env.service
    plan = service._plan

    def plan_then_birth(*args: Any, **kwargs: Any) -> Any:
        out = plan(*args, **kwargs)
        other.process([Inbound.of_frame(S.birth("T1", 3, 0), env.now)])
        return out

    service._plan = plan_then_birth  # type: ignore[method-assign]
    outcomes = env.send(
        S.data("T1", 3, 1, S.T0, [[4] * 6]), S.data("T1", 3, 2, S.T0 + 60, [[5] * 6])
    )
    assert outcomes[1] == (PARKED, HELD_OVER_LIMIT)
    assert env.parked("T1") == []
    assert env.points()[("T1", "io", S.T0 + 60)].value == 0.5


def test_data_of_a_refused_birth_is_refused_at_once(env: Env) -> None:
    bad = [{**S.CHANNELS[0], "name": "$heap"}]
    assert env.send(S.birth("T1", 1, 0, channels=bad)) == [(REJECTED, BAD_CHANNEL)]
    assert env.send(S.data("T1", 1, 1, S.T0, [[1]])) == [(REJECTED, OUT_OF_ORDER)]
    assert env.parked("T1") == []


def test_cfgack_applies_or_rejects_the_pending_config(env: Env) -> None:
    env.send(S.birth("T1", 1, 0, cfg=1))
    with env.sessions() as s:
        s.get(Terminal, "T1").push_config(2, env.now)
        s.commit()
    env.send(S.cfgack("T1", 1, 1, version=2, ok=False, reason="unknown sensor profile"))
    t = env.terminal("T1")
    assert (t.config_status, t.config_reason, t.config_version) == (
        ConfigStatus.REJECTED,
        "unknown sensor profile",
        1,
    )
    with env.sessions() as s:
        s.get(Terminal, "T1").push_config(3, env.now)
        s.commit()
    env.send(S.cfgack("T1", 1, 2, version=3, ok=True))
    env.send(S.cfgack("T1", 1, 3, version=2, ok=True))  # stale: changes nothing
    t = env.terminal("T1")
    assert (t.config_status, t.config_version) == (ConfigStatus.APPLIED, 3)
    with env.sessions() as s:
        acks = s.scalars(
            sa.select(AuditEntry)
            .where(AuditEntry.action == "terminal.config.ack")
            .order_by(AuditEntry.id)
        ).all()
    assert [(a.details["version"], a.details["ok"], a.details["stale"]) for a in acks] == [
        (2, False, False),
        (3, True, False),
        (2, True, True),
    ]
    assert all(a.actor == "terminal:T1" and a.customer_id is not None for a in acks)


def test_birth_reporting_the_pending_config_marks_it_applied(env: Env) -> None:
    env.send(S.birth("T1", 1, 0, cfg=1))
    with env.sessions() as s:
        s.get(Terminal, "T1").push_config(2, env.now)
        s.commit()
    env.send(S.birth("T1", 2, 0, cfg=2))  # its cfgack was lost, the reboot tells
    t = env.terminal("T1")
    assert (t.config_status, t.config_version) == (ConfigStatus.APPLIED, 2)


def test_cmdres_is_stored(env: Env) -> None:
    env.send(S.birth("T1", 1, 0))
    result = {"fw": "1.0.0", "list": [1, 2.5, None, "x"]}
    assert env.send(S.cmdres("T1", 1, 1, cmd_id=7, result=result)) == [(STORED, None)]
    with env.sessions() as s:
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "terminal.cmd.result")
        ).one()
    assert entry.object_id == "T1"
    assert entry.details == {"id": 7, "ok": True, "result": result, "boot": 1, "seq": 1, "ts": S.T0}


def test_status_is_stored_as_series_and_counts_as_seen(env: Env) -> None:
    env.send(S.birth("T1", 1, 0))
    later = env.now + timedelta(minutes=5)
    st = S.status("T1", 1, 1, S.T0 + 300, queued=12, dropped=3, errors={"crc": 2})
    assert env.send(st, at=later) == [(STORED, None)]
    pts = env.points()
    figures = {k[1]: p.value for k, p in pts.items() if k[2] == S.T0 + 300}
    assert figures == {
        "$uptime": 86400.0,
        "$queued": 12.0,
        "$dropped": 3.0,
        "$heap": 48123.0,
        "$rssi": -71.0,
        "$err.crc": 2.0,
    }
    assert env.terminal("T1").last_seen_at == later


def test_death_is_offline_birth_online_and_a_stale_death_is_ignored(env: Env) -> None:
    env.send(S.birth("T1", 1, 1))
    env.send(S.death("T1", 1, 0))
    t = env.terminal("T1")
    assert t.connectivity == Connectivity.OFFLINE
    assert t.last_seen_at == env.now  # the will is the broker's, not a sign of life
    env.send(S.birth("T1", 2, 1))
    env.send(S.death("T1", 1, 5))  # boot 1's will, delivered late
    assert env.terminal("T1").connectivity == Connectivity.ONLINE


def test_hooks_get_alarm_death_birth_status_and_unsynced_frames(env: Env) -> None:
    seen: list[tuple[str, int, bool, str]] = []
    forwarded: list[tuple[str, list]] = []
    named: list[Any] = []

    def on_frame(
        session: Session,
        terminal: Terminal,
        frame: dict,
        at: datetime,
        historical: bool,
        *,
        channels: Any = None,
        preloaded: Any = None,
    ) -> None:
        assert session.in_transaction()
        seen.append((frame["type"], frame["seq"], historical, terminal.id))
        if frame["type"] == "alarm":
            named.append(channels[frame["alias"]])

    def enqueue(session: Session, terminal: Terminal, points: Any) -> None:
        forwarded.append((terminal.id, list(points)))

    env.hooks = Hooks(on_frame=on_frame, enqueue_samples=enqueue)
    env.send(
        S.birth("T1", 1, 0),
        S.data("T1", 1, 1, S.T0, [[12, 3]]),
        S.data("T1", 1, 2, S.T0 + 60, [[13]], unsynced=True),
        S.alarm("T1", 1, 3, S.T0 - 3600),
        S.status("T1", 1, 4),
        S.cfgack("T1", 1, 5, version=9),
        S.death("T1", 1, 6),
    )
    assert seen == [
        ("birth", 0, False, "T1"),
        ("data", 2, False, "T1"),
        ("alarm", 3, True, "T1"),
        ("status", 4, False, "T1"),
        ("death", 6, False, "T1"),
    ]
    # The alarm's channel comes as data frames of its boot read it.
    assert [(c.name, c.unit, c.exp) for c in named] == [("ior", "mA", -1)]
    # One call per terminal and batch, samples in frame order.
    assert forwarded == [
        ("T1", [("io", "mA", S.T0, 1.2), ("ior", "mA", S.T0, 0.3), ("io", "mA", S.T0 + 60, 1.3)])
    ]


def test_samples_are_counted_on_their_own_day(env: Env) -> None:
    term = S.Terminal("T1", start=S.T0 - 120, per_frame=4)  # 23:58 .. 00:01 UTC
    env.send(term.birth(), term.data(), at=S.at(S.T0 + 100))
    c = env.counters("T1")
    assert c[date(2025, 11, 26)] == {
        "frames": 0,
        "samples": 12,
        "duplicates": 0,
        "historical": 0,
        "rejected": 0,
    }
    assert c[date(2025, 11, 27)]["frames"] == 2
    assert c[date(2025, 11, 27)]["samples"] == 12


def test_messages_of_unparsable_topics_touch_no_database(env: Env) -> None:
    out = env.send(Inbound("$SYS/broker/uptime", b"12", env.now))
    assert out == [(REJECTED, "bad_topic")]
    assert topics.UPLINK_FILTER == "mm/v1/+/up/#"


def test_trusted_point_is_the_point_the_constructor_builds() -> None:
    args = ("T1", "kw", S.T0, 12.34)
    assert trusted_point(*args, quality=2, historical=True) == Point(*args, 2, True)
    assert trusted_point(*args, quality=0, historical=False).time == Point(*args).time


def test_pruned_receipts_let_a_frame_in_again(env: Env) -> None:
    env.send(S.birth("T1", 1, 0), at=S.at(S.T0))
    env.send(S.status("T1", 1, 1), at=S.at(S.T0 + 86400))
    with env.sessions() as s:
        assert prune_receipts(s, S.at(S.T0 + 3600)) == 1
        s.commit()
        left = s.scalars(sa.select(FrameReceipt.seq)).all()
    assert left == [1]
    assert env.send(S.birth("T1", 1, 0)) == [(STORED, None)]


def test_a_flood_of_poison_is_counted_in_full_but_logged_sparingly(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    flood = [Inbound("mm/v1/T1/up/data", b"\xff", env.now) for _ in range(200)]
    with caplog.at_level("WARNING", logger="cloud.ingest.service"):
        result = env.service.process(flood)
    assert len(result.rejects) == 200
    lines = [r for r in caplog.records if "rejected frame" in r.getMessage()]
    assert 1 <= len(lines) <= LOG_REJECTS_PER_MINUTE
    assert env.counters("T1")[date(2025, 11, 27)]["rejected"] == 200


def test_a_store_failure_after_new_series_does_not_wedge_the_retry(env: Env) -> None:
    """The failed transaction created (then rolled back) new series; the retry
    must not reuse their ids (it did: every retry failed on the foreign key)."""
    engine = env.store.engine
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if sqlite:
            conn.exec_driver_sql(
                "CREATE TRIGGER disk_trouble BEFORE INSERT ON ts_samples "
                "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION disk_trouble() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'disk trouble'; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER disk_trouble BEFORE INSERT ON ts_samples "
                "FOR EACH STATEMENT EXECUTE FUNCTION disk_trouble()"
            )
    batch = [
        Inbound.of_frame(f, env.now)
        for f in (S.birth("T1", 1, 0), S.data("T1", 1, 1, S.T0, [[1] * 6]))
    ]
    with pytest.raises(Exception, match="disk trouble"):
        env.service.process(batch)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER disk_trouble" + ("" if sqlite else " ON ts_samples"))
    assert [o.status for o in env.service.process(batch).outcomes] == [STORED, STORED]
    assert len([k for k in env.points() if not k[1].startswith("$")]) == 6
