"""The scheduler role: ``python -m cloud.ops.scheduler``.

Run it as its own process (never inside web workers: each forked worker would
run every job again). Several may run for redundancy; exactly one is leader:

- a lease thread takes or renews the database lease (:mod:`cloud.ops.lease`)
  every third of its TTL;
- APScheduler 3 fires every job in every process, and the job wrapper
  (:meth:`Scheduler.fire`) returns at once unless this process holds the
  lease with a third of the TTL to spare;
- the leader then claims ``(job, slot)`` in ``job_runs``; only the process
  whose insert succeeded runs the slot, and it records ok/error there.

When a process becomes leader it catches up daily and monthly jobs whose
current slot has no run yet (the scheduler was down at 03:00, say).
SIGTERM/SIGINT stop it cleanly and release the lease so a standby takes over
without waiting for the TTL.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from cloud.models.base import utcnow
from cloud.models.ops import JobRun
from cloud.ops.context import Context
from cloud.ops.lease import Clock, Lease
from cloud.ops.schedule import Job

log = logging.getLogger("mimamori.ops.scheduler")


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Scheduler.fire` did: ``ran`` False means skipped (not leader,
    or the slot was claimed already)."""

    job: str
    slot: str
    ran: bool
    ok: bool = False
    detail: str = ""


class Scheduler:
    """Jobs plus leader election for one process. See the module docstring."""

    def __init__(
        self,
        engine: Engine,
        jobs: Sequence[Job],
        lease: Lease,
        *,
        context: Callable[[datetime], Context],
        zone: ZoneInfo,
        clock: Clock = utcnow,
    ) -> None:
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate job names in {names}")
        self.engine = engine
        self.jobs = {j.name: j for j in jobs}
        self.lease = lease
        self.context = context
        self.zone = zone
        self.clock = clock
        self._leader = False
        self._stop = threading.Event()
        self._aps: BackgroundScheduler | None = None
        self._lease_thread: threading.Thread | None = None

    @property
    def margin(self) -> timedelta:
        return self.lease.ttl / 3

    # -- leadership ----------------------------------------------------------

    def tick_lease(self) -> bool:
        """Take or renew the lease; on becoming leader, catch up missed slots."""
        try:
            leader = self.lease.acquire()
        except sa.exc.SQLAlchemyError as err:
            # Database unreachable: we cannot prove leadership, so we have none.
            log.warning("lease renewal failed: %s", err)
            leader = False
        if leader and not self._leader:
            log.info("%s is now the scheduler leader", self.lease.holder)
            self._leader = True
            if self._aps is not None:
                # In an executor thread: a long backup must not delay renewals.
                self._aps.add_job(self.catch_up, id="catch-up", replace_existing=True)
        elif not leader and self._leader:
            log.warning("%s lost the scheduler lease", self.lease.holder)
            self._leader = False
        return leader

    def catch_up(self) -> list[Outcome]:
        """Run every catch-up job whose current slot has no run yet."""
        now = self.clock()
        done = []
        for job in self.jobs.values():
            if not job.when.catch_up:
                continue
            slot = job.when.slot(now, self.zone)
            with self.engine.connect() as conn:
                seen = conn.scalar(
                    sa.select(JobRun.id).where(JobRun.job == job.name, JobRun.slot == slot)
                )
            if seen is None:
                done.append(self.fire(job.name))
        return done

    # -- running a job -------------------------------------------------------

    def fire(self, name: str) -> Outcome:
        """Run job ``name`` for its current slot if this process is leader and
        nobody ran that slot yet. Never raises for a failing job: the error is
        logged and recorded in ``job_runs``."""
        job = self.jobs[name]
        now = self.clock()
        slot = job.when.slot(now, self.zone)
        if not self.lease.held(self.margin):
            return Outcome(name, slot, ran=False, detail="not leader")
        run_id = claim(self.engine, name, slot, self.lease.holder, now)
        if run_id is None:
            return Outcome(name, slot, ran=False, detail="slot already claimed")
        return execute(self.engine, job, run_id, slot, ctx=self.context(now), clock=self.clock)

    # -- process life --------------------------------------------------------

    def start(self) -> None:
        """Start the lease thread and APScheduler (both daemon threads)."""
        self.tick_lease()
        self._lease_thread = threading.Thread(target=self._lease_loop, name="lease", daemon=True)
        self._lease_thread.start()
        aps = BackgroundScheduler(
            timezone=self.zone,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        )
        for job in self.jobs.values():
            aps.add_job(self.fire, job.when.trigger(self.zone), args=[job.name], id=job.name)
        aps.start()
        self._aps = aps
        if self._leader:
            aps.add_job(self.catch_up, id="catch-up", replace_existing=True)

    def _lease_loop(self) -> None:
        period = self.lease.ttl.total_seconds() / 3
        while not self._stop.wait(period):
            self.tick_lease()

    def stop(self) -> None:
        """Stop firing, wait for running jobs, then release the lease."""
        self._stop.set()
        if self._aps is not None:
            self._aps.shutdown(wait=True)
        if self._lease_thread is not None:
            self._lease_thread.join()
        try:
            self.lease.release()
        except sa.exc.SQLAlchemyError as err:
            log.warning("could not release the lease (it will expire): %s", err)

    def wait(self) -> None:
        self._stop.wait()


def claim(engine: Engine, job: str, slot: str, holder: str, now: datetime) -> int | None:
    """Insert the ``(job, slot)`` run; its id, or None if it was there already."""
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        return conn.execute(
            insert(JobRun)
            .values(job=job, slot=slot, holder=holder, status="running", started_at=now, detail="")
            .on_conflict_do_nothing(index_elements=["job", "slot"])
            .returning(JobRun.id)
        ).scalar()


def execute(
    engine: Engine, job: Job, run_id: int, slot: str, *, ctx: Context, clock: Clock
) -> Outcome:
    """Run ``job`` for a claimed run and record its end."""
    try:
        detail, ok = job.run(ctx), True
    except Exception as err:  # the boundary: one failing job must not stop the scheduler
        log.exception("job %s (slot %s) failed", job.name, slot)
        detail, ok = f"{type(err).__name__}: {err}", False
    with engine.begin() as conn:
        conn.execute(
            sa.update(JobRun)
            .where(JobRun.id == run_id)
            .values(status="ok" if ok else "error", finished_at=clock(), detail=detail[:4000])
        )
    log.info("job %s slot %s: %s %s", job.name, slot, "ok" if ok else "error", detail)
    return Outcome(job.name, slot, ran=True, ok=ok, detail=detail)


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def main(argv: Sequence[str] | None = None) -> int:
    from cloud.ops.context import build  # noqa: PLC0415
    from cloud.ops.jobs import default_jobs  # noqa: PLC0415
    from cloud.ops.logfiles import configure_logging  # noqa: PLC0415

    parser = argparse.ArgumentParser(
        prog="python -m cloud.ops.scheduler",
        description="Run the scheduled operations jobs (one leader among all instances).",
    )
    parser.add_argument("--holder", default=default_holder(), help="name in the lease row")
    parser.add_argument("--ops-file", help="operations settings (default instance/ops.toml)")
    parser.add_argument("--instance-file", help="cloud settings (default instance/mimamori.toml)")
    args = parser.parse_args(argv)

    env = build(instance_file=args.instance_file, ops_file=args.ops_file)
    configure_logging("scheduler", env.ops.log_dir, zone=env.ops.tz)
    lease = Lease(env.engine, args.holder, env.ops.lease_ttl_s)
    scheduler = Scheduler(
        env.engine, default_jobs(env.ops), lease, context=env.context, zone=env.ops.tz
    )

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        scheduler._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("scheduler %s starting with jobs %s", args.holder, sorted(scheduler.jobs))
    scheduler.start()
    scheduler.wait()
    scheduler.stop()
    env.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
