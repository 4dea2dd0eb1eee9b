"""Is the service healthy? The figures of the operations console and of ``/metrics``.

One computation for both (:mod:`cloud.app.metrics` exports these same
figures), each a few grouped queries whatever the fleet's size:

- **fleet**: terminals in service per customer, online / offline / never
  connected; **silent** terminals, heard from before but not for longer than
  their heartbeat interval (from the configuration in force, 300 s by
  default) plus :data:`GRACE_S`, whatever their connectivity says yet (the
  offline sweep marks them after several missed heartbeats); configurations
  published and not yet acknowledged (and how often they were re-pushed);
  parked frames by reason;
- **ingest**: frames stored in the last :data:`RATE_WINDOW_S` seconds (the
  rate) and the age of the newest stored frame (the lag as a customer feels
  it: nothing newer has reached the database);
- **outbox**: notifications waiting (queued, failed) and given up (dead),
  and how late the oldest due one is;
- **broker**: the newest health check of the broker and its count of
  connected clients (read from ``$SYS`` by the scheduler's check);
- **backup**: the newest run of the backup job and the newest good one (its
  summary says what the verification checked).

:func:`snapshot` gathers them with this month's availability;
:func:`assess` says what needs a person, each finding an English template
(marked for translation) and its values. Requeueing a dead notification is
an operator's action, audited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.models import (
    Alarm,
    AlarmState,
    Customer,
    Delivery,
    DeliveryStatus,
    FrameReceipt,
    ParkedFrame,
    Severity,
    Terminal,
    TerminalConfig,
    TerminalStatus,
)
from cloud.models.enums import ConfigStatus
from cloud.models.ops import HealthCheck, JobRun
from cloud.notify import outbox as notify_outbox
from cloud.ops import availability
from cloud.ops.settings import OpsSettings
from cloud.services import audit
from cloud.services.errors import N_, Invalid
from cloud.services.scope import OPERATE, Viewer, require

DEFAULT_HEARTBEAT_S = 300
GRACE_S = 60
RATE_WINDOW_S = 300
SILENT_LISTED = 50
# What needs a person (assess): the promises of the service sheet and the DESIGN.
AVAILABILITY_TARGET = Decimal("99.5")
BACKUP_MAX_AGE = timedelta(hours=26)  # daily, with slack for a slow run
OUTBOX_MAX_LATE_S = 300
CONFIG_MAX_PENDING = timedelta(hours=1)
WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.FAILED, DeliveryStatus.DEAD)


@dataclass(frozen=True)
class CustomerFleet:
    customer_id: int | None
    name: str
    online: int = 0
    offline: int = 0
    never: int = 0
    silent: int = 0

    @property
    def total(self) -> int:
        return self.online + self.offline + self.never


@dataclass(frozen=True)
class SilentTerminal:
    terminal_id: str
    name: str
    customer_name: str
    connectivity: str
    last_seen_at: datetime
    heartbeat_s: int
    silent_s: int


@dataclass(frozen=True)
class Fleet:
    customers: list[CustomerFleet]
    silent: list[SilentTerminal]  # longest silence last; at most SILENT_LISTED
    silent_total: int
    configs_pending: int
    oldest_pending_at: datetime | None
    parked: dict[str, int] = field(default_factory=dict)
    # Re-pushes of the pending configs (cloud.services.configs.repush_due):
    # how many of them were published again, how often in all, and when last.
    configs_repushed: int = 0
    config_repushes: int = 0
    last_repush_at: datetime | None = None

    def count(self, connectivity: str) -> int:
        return sum(getattr(c, connectivity) for c in self.customers)


@dataclass(frozen=True)
class Ingest:
    frames_in_window: int
    window_s: int
    last_frame_at: datetime | None
    last_frame_age_s: float | None

    @property
    def frames_per_s(self) -> float:
        return self.frames_in_window / self.window_s


@dataclass(frozen=True)
class Outbox:
    queued: int
    failed: int
    dead: int
    oldest_due_at: datetime | None
    oldest_due_s: float

    @property
    def backlog(self) -> int:
        return self.queued + self.failed


@dataclass(frozen=True)
class Broker:
    ok: bool | None  # None: never checked
    at: datetime | None
    detail: str
    latency_ms: int
    clients_connected: int | None


@dataclass(frozen=True)
class Backups:
    last: JobRun | None
    last_ok: JobRun | None


def _utc(value: datetime | None) -> datetime | None:
    """An aggregate's datetime, aware (a driver may hand back min()/max() naive)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def fleet(session: Session, now: datetime) -> Fleet:
    """Terminals in service by customer and connectivity, silent ones,
    pending configurations and parked frames."""
    names = {cid: name for cid, name in session.execute(sa.select(Customer.id, Customer.name))}
    rows: dict[int | None, dict[str, int]] = {}
    in_service = Terminal.status == TerminalStatus.ACTIVE
    for customer_id, conn, n in session.execute(
        sa.select(Terminal.customer_id, Terminal.connectivity, sa.func.count())
        .where(in_service)
        .group_by(Terminal.customer_id, Terminal.connectivity)
    ):
        key = {"online": "online", "offline": "offline"}.get(str(conn), "never")
        counts = rows.setdefault(customer_id, {})
        counts[key] = counts.get(key, 0) + int(n)
    silent = _silent(session, now, names)
    per_customer: dict[int | None, int] = {}
    for s in silent:
        per_customer[s[0]] = per_customer.get(s[0], 0) + 1
    customers = sorted(
        (
            CustomerFleet(
                cid,
                names.get(cid, "") if cid is not None else "",
                silent=per_customer.get(cid, 0),
                **counts,
            )
            for cid, counts in rows.items()
        ),
        key=lambda c: (-(c.offline + c.silent), c.name),
    )
    pending, oldest, repushed, repushes, last_repush = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.min(Terminal.config_status_at),
            sa.func.count(Terminal.config_repushed_at),
            sa.func.coalesce(sa.func.sum(Terminal.config_repushes), 0),
            sa.func.max(Terminal.config_repushed_at),
        ).where(in_service, Terminal.config_status == ConfigStatus.PENDING)
    ).one()
    parked = {
        reason: int(n)
        for reason, n in session.execute(
            sa.select(ParkedFrame.reason, sa.func.count()).group_by(ParkedFrame.reason)
        )
    }
    listed = sorted((s[1] for s in silent), key=lambda t: t.silent_s)[:SILENT_LISTED]
    return Fleet(
        customers,
        listed,
        len(silent),
        int(pending),
        _utc(oldest),
        parked,
        configs_repushed=int(repushed),
        config_repushes=int(repushes),
        last_repush_at=_utc(last_repush),
    )


def _silent(
    session: Session, now: datetime, names: dict[int, str]
) -> list[tuple[int | None, SilentTerminal]]:
    """(customer id, terminal) of every silent terminal in service. Only
    terminals quiet for longer than the shortest possible allowance are read
    with their configuration, so a healthy fleet costs one small query."""
    floor = now - timedelta(seconds=10 + GRACE_S)  # 10 s: the least heartbeat a config allows
    candidates = session.execute(
        sa.select(
            Terminal.id,
            Terminal.name,
            Terminal.customer_id,
            Terminal.connectivity,
            Terminal.last_seen_at,
            Terminal.config_version,
        ).where(
            Terminal.status == TerminalStatus.ACTIVE,
            Terminal.last_seen_at.is_not(None),
            Terminal.last_seen_at < floor,
        )
    ).all()
    if not candidates:
        return []
    beats: dict[str, int] = {}
    wanted = [(c.id, c.config_version) for c in candidates if c.config_version is not None]
    for i in range(0, len(wanted), 500):
        chunk = wanted[i : i + 500]
        for tid, doc in session.execute(
            sa.select(TerminalConfig.terminal_id, TerminalConfig.document).where(
                sa.tuple_(TerminalConfig.terminal_id, TerminalConfig.version).in_(chunk)
            )
        ):
            beat = (doc or {}).get("heartbeat")
            if isinstance(beat, int) and beat > 0:
                beats[tid] = beat
    out = []
    for c in candidates:
        beat = beats.get(c.id, DEFAULT_HEARTBEAT_S)
        quiet = int((now - c.last_seen_at).total_seconds())
        if quiet > beat + GRACE_S:
            out.append(
                (
                    c.customer_id,
                    SilentTerminal(
                        c.id,
                        c.name,
                        names.get(c.customer_id, "") if c.customer_id is not None else "",
                        str(c.connectivity),
                        c.last_seen_at,
                        beat,
                        quiet,
                    ),
                )
            )
    return out


def ingest(session: Session, now: datetime, window_s: int = RATE_WINDOW_S) -> Ingest:
    """Frames stored in the last ``window_s`` seconds and the newest one's age."""
    since = now - timedelta(seconds=window_s)
    n, stored = session.execute(
        sa.select(
            sa.func.count().filter(FrameReceipt.received_at >= since),
            sa.func.max(FrameReceipt.received_at),
        )
    ).one()
    newest = _utc(stored)
    age = None if newest is None else max(0.0, (now - newest).total_seconds())
    return Ingest(int(n or 0), window_s, newest, age)


def outbox(session: Session, now: datetime) -> Outbox:
    """Notifications waiting and dead, and the lateness of the oldest due one."""
    depth = dict.fromkeys(WAITING, 0)
    for status, n in session.execute(
        sa.select(Delivery.status, sa.func.count())
        .where(Delivery.status.in_(WAITING))
        .group_by(Delivery.status)
    ):
        depth[DeliveryStatus(status)] = int(n)
    oldest = _utc(
        session.scalar(
            sa.select(sa.func.min(Delivery.next_attempt_at)).where(
                Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.FAILED))
            )
        )
    )
    late = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return Outbox(
        depth[DeliveryStatus.QUEUED],
        depth[DeliveryStatus.FAILED],
        depth[DeliveryStatus.DEAD],
        oldest,
        late,
    )


def open_alarms(session: Session) -> dict[tuple[Severity, AlarmState], int]:
    """Raised and acknowledged alarms by severity and state (zeros included)."""
    counts = {(s, st): 0 for s in Severity for st in (AlarmState.RAISED, AlarmState.ACKNOWLEDGED)}
    for severity, state, n in session.execute(
        sa.select(Alarm.severity, Alarm.state, sa.func.count())
        .where(Alarm.state != AlarmState.CLEARED)
        .group_by(Alarm.severity, Alarm.state)
    ):
        counts[(Severity(severity), AlarmState(state))] = int(n)
    return counts


def broker(session: Session) -> Broker:
    """The newest health check of the broker."""
    row = session.scalars(
        sa.select(HealthCheck)
        .where(HealthCheck.component == "broker")
        .order_by(HealthCheck.at.desc())
        .limit(1)
    ).first()
    if row is None:
        return Broker(None, None, "", 0, None)
    clients = (row.figures or {}).get("clients_connected")
    return Broker(row.ok, row.at, row.detail, row.latency_ms, clients)


def backups(session: Session) -> Backups:
    """The newest backup run, and the newest one that succeeded."""

    def newest(*conds: sa.ColumnElement[bool]) -> JobRun | None:
        return session.scalars(
            sa.select(JobRun)
            .where(JobRun.job == "backup", *conds)
            .order_by(JobRun.started_at.desc())
            .limit(1)
        ).first()

    last = newest()
    return Backups(last, last if last and last.status == "ok" else newest(JobRun.status == "ok"))


def dead_letters(session: Session, limit: int = 50) -> list[Delivery]:
    return notify_outbox.dead_letters(session, limit=limit)


def requeue(
    session: Session,
    viewer: Viewer,
    delivery_ids: list[int],
    *,
    now: datetime,
    ip: str | None,
) -> int:
    """Give dead notifications a fresh retry budget; return how many were
    dead (the others are left alone). Audited; the caller's session commits."""
    require(viewer, OPERATE)
    if not delivery_ids:
        raise Invalid(N_("Choose at least one notification."))
    done = [i for i in delivery_ids if notify_outbox.requeue(session, i, now)]
    if done:
        audit.record(
            session,
            viewer,
            "notification.requeue",
            "notification",
            ",".join(map(str, done))[:64],
            at=now,
            ip=ip,
            details={"ids": done},
        )
    session.commit()
    return len(done)


@dataclass(frozen=True)
class Snapshot:
    at: datetime
    fleet: Fleet
    ingest: Ingest
    outbox: Outbox
    broker: Broker
    backups: Backups
    availability: availability.Availability
    ingest_max_silence_s: int


def snapshot(session: Session, now: datetime, ops: OpsSettings, zone: ZoneInfo) -> Snapshot:
    """Every figure of the console at ``now`` (this month in ``zone``)."""
    month = now.astimezone(zone).date().replace(day=1)
    return Snapshot(
        now,
        fleet(session, now),
        ingest(session, now),
        outbox(session, now),
        broker(session),
        backups(session),
        availability.monthly(session, month, ops.components, zone=zone, now=now),
        ops.ingest_max_silence_s,
    )


@dataclass(frozen=True)
class Finding:
    """Something that needs a person: ``bad`` (the service is hurt) or ``warn``."""

    level: str
    template: str
    params: dict[str, object] = field(default_factory=dict)


def assess(snap: Snapshot) -> list[Finding]:
    """What needs a person, worst first; empty when the service is healthy."""
    out: list[Finding] = []
    online = snap.fleet.count("online")
    age = snap.ingest.last_frame_age_s
    if online and (age is None or age > snap.ingest_max_silence_s):
        out.append(
            Finding(
                "bad",
                N_("Ingest: %(online)s terminals online but no frame stored for %(age)s s."),
                {"online": online, "age": "∞" if age is None else int(age)},
            )
        )
    if snap.broker.ok is False:
        out.append(
            Finding(
                "bad",
                N_("Broker: the last check failed (%(detail)s)."),
                {"detail": snap.broker.detail},
            )
        )
    good = snap.backups.last_ok
    if good is None or good.finished_at is None or snap.at - good.finished_at > BACKUP_MAX_AGE:
        out.append(Finding("bad", N_("Backup: no successful backup in the last 26 hours.")))
    elif snap.backups.last is not None and snap.backups.last.status == "error":
        out.append(Finding("bad", N_("Backup: the last run failed.")))
    if snap.outbox.oldest_due_s > OUTBOX_MAX_LATE_S:
        out.append(
            Finding(
                "warn",
                N_("Notifications: %(n)s waiting, the oldest %(s)s s late."),
                {"n": snap.outbox.backlog, "s": int(snap.outbox.oldest_due_s)},
            )
        )
    if snap.outbox.dead:
        out.append(
            Finding(
                "warn", N_("Notifications: %(n)s gave up (dead letters)."), {"n": snap.outbox.dead}
            )
        )
    if snap.fleet.silent_total:
        out.append(
            Finding(
                "warn",
                N_("Terminals: %(n)s silent longer than their heartbeat."),
                {"n": snap.fleet.silent_total},
            )
        )
    oldest = snap.fleet.oldest_pending_at
    if oldest is not None and snap.at - oldest > CONFIG_MAX_PENDING:
        out.append(
            Finding(
                "warn",
                N_("Configurations: %(n)s not acknowledged, the oldest for over an hour."),
                {"n": snap.fleet.configs_pending},
            )
        )
    if snap.fleet.parked:
        out.append(
            Finding(
                "warn",
                N_("Parked frames: %(n)s kept but not applied."),
                {"n": sum(snap.fleet.parked.values())},
            )
        )
    pct = snap.availability.service.percent
    if pct is not None and pct < AVAILABILITY_TARGET:
        out.append(
            Finding(
                "warn",
                N_("Availability this month: %(pct)s %% (target %(target)s %%)."),
                {"pct": pct, "target": AVAILABILITY_TARGET},
            )
        )
    return out
