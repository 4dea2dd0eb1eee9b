"""Leader lease in the database: one scheduler at a time runs the jobs.

A row of ``scheduler_leases`` names the holder and when its lease expires.
:meth:`Lease.acquire` is a single conditional UPDATE ("take it if it is mine
or expired"), falling back to INSERT ... ON CONFLICT DO NOTHING for the very
first holder. Both databases serialise those statements on the row (SQLite
locks the whole file, PostgreSQL re-checks the WHERE clause after waiting for
the row lock), so two processes cannot both succeed for the same instant.

Clocks: expiry is written from the holder's clock and compared with the
taker's, so the lease only works while the hosts' clocks agree to well within
the TTL; the service keeps them NTP-synchronised anyway. As a second fence
every job run claims its slot in ``job_runs`` (see :mod:`cloud.ops.scheduler`),
so even a holder that was paused past its expiry cannot run a slot twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from cloud.models.base import UTCDateTime, utcnow
from cloud.models.ops import SchedulerLease

Clock = Callable[[], datetime]


class Lease:
    """The lease ``name`` as seen by ``holder``. Thread-safe.

    ``held()`` answers from memory (no query): True while the last successful
    :meth:`acquire` is younger than the TTL minus ``margin``. Database errors
    from :meth:`acquire` propagate as SQLAlchemy errors; the caller treats them
    as "not leader" (see :class:`cloud.ops.scheduler.Scheduler`).
    """

    def __init__(
        self,
        engine: Engine,
        holder: str,
        ttl_s: float,
        name: str = "scheduler",
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl = timedelta(seconds=ttl_s)
        self.name = name
        self.clock = clock
        self._until: datetime | None = None
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take or renew the lease; True if this holder has it for one more TTL."""
        now = self.clock()
        until = now + self.ttl
        L = SchedulerLease
        stamp = sa.literal(now, UTCDateTime())
        # RETURNING, not rowcount: psycopg reports -1 for INSERT ... ON CONFLICT.
        with self.engine.begin() as conn:
            taken = (
                conn.execute(
                    sa.update(L)
                    .where(L.name == self.name, sa.or_(L.holder == self.holder, L.expires_at < now))
                    .values(
                        holder=self.holder,
                        expires_at=until,
                        renewed_at=now,
                        # A renewal keeps the original acquisition time.
                        acquired_at=sa.case((L.holder == self.holder, L.acquired_at), else_=stamp),
                    )
                    .returning(L.name)
                ).first()
                is not None
            )
            if not taken:
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                taken = (
                    conn.execute(
                        insert(L)
                        .values(
                            name=self.name,
                            holder=self.holder,
                            expires_at=until,
                            acquired_at=now,
                            renewed_at=now,
                        )
                        .on_conflict_do_nothing(index_elements=["name"])
                        .returning(L.name)
                    ).first()
                    is not None
                )
        with self._lock:
            self._until = until if taken else None
        return taken

    def held(self, margin: timedelta = timedelta(0)) -> bool:
        """True if the last acquire succeeded and has ``margin`` left to run."""
        with self._lock:
            until = self._until
        return until is not None and self.clock() + margin < until

    def release(self) -> None:
        """Give the lease up now (clean shutdown), so a standby takes over at once."""
        with self._lock:
            self._until = None
        L = SchedulerLease
        with self.engine.begin() as conn:
            conn.execute(sa.delete(L).where(L.name == self.name, L.holder == self.holder))

    def current_holder(self) -> tuple[str, datetime] | None:
        """(holder, expires_at) of the row as the database has it, or None."""
        L = SchedulerLease
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(L.holder, L.expires_at).where(L.name == self.name)).first()
        return None if row is None else (row[0], row[1])
