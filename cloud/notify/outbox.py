"""The delivery worker: send due ledger rows, retry with backoff, dead-letter.

Claiming with a lease. A row is due when its status is ``queued`` or
``failed`` and ``next_attempt_at <= now``. A worker claims a batch in one
atomic statement that pushes ``next_attempt_at`` to ``now + lease`` and
counts the attempt (``attempts + 1``)::

    -- PostgreSQL, one transaction:
    SELECT id ... due ... ORDER BY next_attempt_at LIMIT :n FOR UPDATE SKIP LOCKED
    UPDATE notification_ledger SET next_attempt_at = :lease_end, attempts = attempts + 1
    WHERE id IN (:ids) AND <due> RETURNING id, attempts
    -- SQLite, one statement:
    UPDATE ... WHERE id IN (SELECT id ... due ... LIMIT :n) AND <due> RETURNING id, attempts

Before claiming, :func:`any_due` asks a read-only question on the
``(status, next_attempt_at)`` index: is anything due at all? An idle worker
therefore polls often (a delivery should start within a fraction of a second
of the alarm's commit) without writing: on SQLite the claim's UPDATE takes
the database's single write lock even when it matches nothing, which would
make every idle poll queue behind, and hold up, the ingest's commits.

On PostgreSQL, ``SKIP LOCKED`` lets concurrent workers take different rows
without waiting; on SQLite the statement runs under the database's single
write lock. On both, repeating the due condition in the UPDATE makes a
second claim of a row match nothing. A claimed row is invisible to other workers until its lease
ends, so two workers never send the same row; a worker that dies mid-send
leaves the row to be claimed again once the lease has passed (that retry
reuses the Message-ID / delivery id, so the receiver can drop a duplicate).
The claimed ``attempts`` value is the lease token: the outcome is written
only if the row still has it (``WHERE id = :id AND attempts = :token``), so a
worker whose lease expired cannot overwrite a newer claim's result.

The leased row keeps status ``queued``/``failed`` (the schema has no
``sending`` status): "in flight" is ``next_attempt_at`` in the future with
``attempts`` just incremented. The row carries its attempt count, so a row
whose worker keeps crashing is dead-lettered after ``max_attempts`` claims.

Sending happens outside any database transaction: no row lock or SQLite
write lock is held while waiting for a mail server. Claimed rows are sent in
:mod:`cloud.notify.lanes`, one lane per destination, so a slow endpoint holds
only its own rows; the claim leaves alone the rows no lane can take now.

The long-running :class:`Worker` sleeps until a row is added (a wake-up,
:mod:`cloud.notify.wake`), a lane has room again, or the next retry is due;
``run_once`` is one pass that waits for its sends (tests, ``--once``).
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from cloud.models import Delivery, DeliveryChannel, DeliveryStatus, as_utc, utcnow
from cloud.notify import wake
from cloud.notify.lanes import (
    OPEN,
    Busy,
    Claimed,
    Lanes,
    RunStats,
    priority,
    priority_sql,
    release,
)
from cloud.notify.settings import NotifySettings, RetryPolicy
from cloud.timeseries import TimeSeriesStore

__all__ = ["Busy", "Claimed", "RunStats", "Worker", "any_due", "claim", "run_once"]

DEFAULT_BATCH = 50
_NOTHING_BUSY = Busy()


def _takeable(busy: Busy) -> list[Any]:
    """Open rows a lane could take now (whether due or not)."""
    conds: list[Any] = [Delivery.status.in_(OPEN)]
    # Webhooks and chat: one lane per destination, under the same limits.
    hook = Delivery.channel != DeliveryChannel.EMAIL
    if busy.webhooks_full:
        conds.append(sa.not_(hook))
    else:
        if busy.destinations:
            conds.append(sa.or_(sa.not_(hook), Delivery.recipient.not_in(busy.destinations)))
        if busy.customers:
            conds.append(
                sa.or_(
                    sa.not_(hook),
                    Delivery.customer_id.is_(None),
                    Delivery.customer_id.not_in(busy.customers),
                )
            )
    if busy.mail_full:
        conds.append(Delivery.channel != DeliveryChannel.EMAIL)
    return conds


def _due(now: datetime, busy: Busy) -> tuple[Any, ...]:
    """The rows due at ``now`` that a lane could take."""
    return (*_takeable(busy), Delivery.next_attempt_at <= now)


def any_due(session: Session, now: datetime, busy: Busy = _NOTHING_BUSY) -> bool:
    """True if a row a lane could take is due at ``now``. Read-only (no lock
    taken), served by the ``ix_notification_ledger_due`` index; ends the read
    transaction."""
    found = session.scalar(sa.select(Delivery.id).where(*_due(as_utc(now), busy)).limit(1))
    session.commit()
    return found is not None


def next_due(session: Session, busy: Busy = _NOTHING_BUSY) -> datetime | None:
    """When the earliest open row a lane could take falls due (None: none);
    ends the read. Rows of busy lanes do not count: the lane's end wakes the
    worker for them."""
    when = session.scalar(sa.select(sa.func.min(Delivery.next_attempt_at)).where(*_takeable(busy)))
    session.commit()
    return None if when is None else as_utc(when)


def claim(
    session: Session,
    now: datetime,
    policy: RetryPolicy,
    limit: int = DEFAULT_BATCH,
    busy: Busy = _NOTHING_BUSY,
) -> list[Claimed]:
    """Claim up to ``limit`` due rows (those ``busy`` leaves), alarms before
    what can wait (:func:`cloud.notify.lanes.priority`), for ``policy.lease``;
    commit; return them by id."""
    now = as_utc(now)
    is_due = _due(now, busy)
    due = (
        sa.select(Delivery.id)
        .where(*is_due)
        .order_by(priority_sql(), Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    )
    target: Any
    if session.get_bind().dialect.name == "postgresql":
        # Lock first, in its own statement: inside "id IN (subquery)" the
        # planner may run a LIMIT ... SKIP LOCKED subquery more than once and
        # claim far more than ``limit`` rows. The locks last until commit.
        target = list(session.scalars(due.with_for_update(skip_locked=True)))
        if not target:
            session.commit()
            return []
    else:
        target = due.scalar_subquery()
    stmt = (
        sa.update(Delivery)
        .where(Delivery.id.in_(target), *is_due)
        .values(next_attempt_at=now + policy.lease, attempts=Delivery.attempts + 1)
        .returning(
            Delivery.id,
            Delivery.attempts,
            Delivery.channel,
            Delivery.recipient,
            Delivery.customer_id,
            Delivery.event,
        )
        .execution_options(synchronize_session=False)
    )
    rows = [
        Claimed(
            int(i),
            int(a),
            DeliveryChannel(ch),
            str(to),
            None if c is None else int(c),
            priority(ev),
        )
        for i, a, ch, to, c, ev in session.execute(stmt).all()
    ]
    session.commit()
    return sorted(rows, key=lambda r: r.id)


class Worker:
    """Claims due rows and hands them to lanes; one per delivery process.

    ``sessions`` makes the sessions of the lanes (one each); the claims use
    the session passed to :meth:`pass_once`. ``clock`` gives the time that
    outcomes record (the real time by default). :attr:`kick` is set whenever
    a pass may find new work (a wake-up, a lane that ended).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: NotifySettings,
        policy: RetryPolicy,
        *,
        batch: int = DEFAULT_BATCH,
        clock: Any = utcnow,
        store: TimeSeriesStore | None = None,
    ) -> None:
        self.policy = policy
        self.batch = batch
        self.kick = threading.Event()
        self.stats = RunStats()
        self.lanes = Lanes(
            sessions,
            settings,
            policy,
            self.stats,
            clock=clock,
            on_idle=self.kick.set,
            mail_queue=batch,
            store=store,
        )

    def pass_once(self, session: Session, now: datetime) -> int:
        """Claim what lanes can take at ``now`` and queue it; return the rows claimed.

        Commits; when nothing is due it only reads (:func:`any_due`).
        """
        self.kick.clear()  # before reading, so a wake-up during the pass is kept
        session.commit()
        busy = self.lanes.busy()
        if not any_due(session, now, busy):
            return 0
        claimed = claim(session, now, self.policy, self.batch, busy)
        self.stats.claimed += len(claimed)
        for row in self.lanes.submit(claimed):
            release(session, row.id, row.token, as_utc(now))
            self.stats.count("released")
        return len(claimed)

    def wait(self, session: Session, longest_s: float) -> None:
        """Sleep until kicked, the next open row is due, or ``longest_s``."""
        timeout = longest_s
        when = next_due(session, self.lanes.busy())
        if when is not None:
            timeout = min(timeout, max(0.0, (when - utcnow()).total_seconds()))
        if timeout > 0:
            self.kick.wait(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Let the sends in progress finish, hand queued rows back; wait for
        the lanes (False if ``timeout`` passed first)."""
        self.lanes.stop()
        return self.lanes.join(timeout)


def run_once(
    session: Session,
    now: datetime,
    settings: NotifySettings | None = None,
    policy: RetryPolicy | None = None,
    *,
    limit: int = DEFAULT_BATCH,
    store: TimeSeriesStore | None = None,
) -> RunStats:
    """One pass at ``now``: claim a batch of due rows, send it, record each
    outcome (with ``now`` as its time), and return when every send has ended.

    ``settings`` default to :meth:`NotifySettings.from_env`; ``store`` is
    where forwarded CSV files are built from (None: such rows are retried). The session must
    not hold uncommitted work: this function commits. When nothing is due it
    only reads (:func:`any_due`) and returns empty stats. Never raises for a
    failed delivery; that is what the ledger records.
    """
    now = as_utc(now)
    settings = settings or NotifySettings.from_env()
    sessions = sessionmaker(bind=session.get_bind(), expire_on_commit=False)
    worker = Worker(
        sessions, settings, policy or RetryPolicy(), batch=limit, clock=lambda: now, store=store
    )
    worker.pass_once(session, now)
    worker.lanes.join()
    return worker.stats


def dead_letters(
    session: Session, *, customer_id: int | None = None, limit: int = 100
) -> list[Delivery]:
    """Dead rows, newest first: what a human has to look at."""
    stmt = sa.select(Delivery).where(Delivery.status == DeliveryStatus.DEAD)
    if customer_id is not None:
        stmt = stmt.where(Delivery.customer_id == customer_id)
    return list(session.scalars(stmt.order_by(Delivery.id.desc()).limit(limit)))


def requeue(session: Session, delivery_id: int, now: datetime) -> bool:
    """Give a dead row a fresh retry budget (after the cause was fixed).
    False if the row is not dead. The caller commits."""
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.DEAD)
        .values(status=DeliveryStatus.QUEUED, attempts=0, next_attempt_at=as_utc(now))
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    )
    found = result.first() is not None
    if found:
        wake.announce(session)
    return found
