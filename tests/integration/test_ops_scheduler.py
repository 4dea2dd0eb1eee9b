"""Leader lease and scheduler processes on SQLite and a real PostgreSQL.

Two (then three) real ``python -m cloud.ops.scheduler`` processes share one
database: only the leader runs jobs, a clean stop hands over at once, a
killed leader is replaced once its lease expires, and no slot ever runs twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud.models.ops import JobRun, SchedulerLease
from cloud.ops.lease import Lease
from cloud.ops.schedule import DailyAt, Every, Job
from cloud.ops.scheduler import Scheduler
from tests.support.ops import context, ops_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
DEADLINE_S = 60


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_one_holder_at_a_time_and_takeover_only_after_expiry(engine):
    clock = Clock(T0)
    a = Lease(engine, "a", 30, clock=clock)
    b = Lease(engine, "b", 30, clock=clock)
    assert a.acquire()
    assert not b.acquire()
    assert a.held() and not b.held()
    clock.now = T0 + timedelta(seconds=20)
    assert a.acquire()  # renewal
    clock.now = T0 + timedelta(seconds=49)
    assert not b.acquire()  # a's renewal moved the expiry to T0+50 s
    assert a.held(timedelta(0)) and not a.held(timedelta(seconds=5))
    clock.now = T0 + timedelta(seconds=51)
    assert not a.held()
    assert b.acquire()  # a missed its renewals: b takes over
    assert not a.acquire()  # and a, waking up, does not get it back
    assert b.current_holder() == ("b", T0 + timedelta(seconds=81))
    b.release()
    assert a.acquire()  # released: no need to wait for the expiry


def test_racing_acquires_elect_exactly_one(engine):
    clock = Clock(T0)
    leases = [Lease(engine, f"p{i}", 30, clock=clock) for i in range(8)]
    barrier = threading.Barrier(len(leases))
    won: list[str] = []

    def race(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire():
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert leases[0].current_holder() == (won[0], T0 + timedelta(seconds=30))


def test_only_the_leader_fires_and_a_slot_runs_once(engine, tmp_path):
    clock = Clock(T0)
    ops = ops_settings(tmp_path)
    runs: list[str] = []
    jobs = [
        Job("tick", Every(60), lambda ctx: runs.append("tick") or "ticked"),
        Job("daily", DailyAt(3, 0), lambda ctx: runs.append("daily") or "done"),
    ]
    make = lambda name: Scheduler(  # noqa: E731
        engine,
        jobs,
        Lease(engine, name, 30, clock=clock),
        zone=ops.tz,
        clock=clock,
        context=lambda now: context(engine, ops, now),
    )
    a, b = make("a"), make("b")
    assert a.tick_lease() and not b.tick_lease()
    assert not b.fire("tick").ran
    assert a.fire("tick").ok
    assert not a.fire("tick").ran  # same minute: the slot is taken
    # Even a second process that wrongly believes it leads cannot run the slot.
    b.lease._until = T0 + timedelta(seconds=30)
    assert b.fire("tick").detail == "slot already claimed"
    assert a.catch_up()[0].slot == "2026-05-01"  # 09:00 JST: today's 03:00 slot is due
    assert a.catch_up() == []
    assert runs == ["tick", "daily"]

    def failing(ctx):
        raise RuntimeError("boom")

    c = Scheduler(
        engine,
        [Job("bad", Every(60), failing)],
        Lease(engine, "a", 30, clock=clock),
        zone=ops.tz,
        clock=clock,
        context=lambda now: context(engine, ops, now),
    )
    c.tick_lease()
    outcome = c.fire("bad")
    assert outcome.ran and not outcome.ok and "boom" in outcome.detail
    with engine.connect() as conn:
        status = conn.execute(
            sa.select(JobRun.status, JobRun.detail).where(JobRun.job == "bad")
        ).one()
    assert status.status == "error" and "RuntimeError: boom" in status.detail


# -- real processes ---------------------------------------------------------------


def start(name: str, url: str, ops_file: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MIMAMORI_DATABASE_URL": url}
    env.pop("MIMAMORI_INSTANCE_FILE", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cloud.ops.scheduler",
            "--holder",
            name,
            "--ops-file",
            str(ops_file),
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(cwd / f"{name}.err", "wb"),
    )


def runs_by(engine, job: str = "health") -> list[tuple[str, str, datetime]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.select(JobRun.holder, JobRun.slot, JobRun.started_at)
                .where(JobRun.job == job)
                .order_by(JobRun.started_at)
            )
        ]


def wait_for(predicate, what: str, procs, tmp: Path):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for p in procs:
            if p.poll() not in (None, 0, -9):
                errs = "\n".join(f.read_text()[-1500:] for f in tmp.glob("*.err"))
                raise AssertionError(f"a scheduler died ({p.returncode}):\n{errs}")
        time.sleep(0.1)
    errs = "\n".join(f.read_text()[-1500:] for f in tmp.glob("*.err"))
    raise AssertionError(f"timed out waiting for {what}\n{errs}")


def test_two_scheduler_processes_run_each_job_once(engine, migrated, tmp_path):
    ops_file = tmp_path / "ops.toml"
    ops_file.write_text(
        'health_interval_s = 1\nlease_ttl_s = 3\ncomponents = ["database"]\n'
        f'backup_dir = "{tmp_path / "b"}"\nlog_dir = "{tmp_path / "logs"}"\n'
        f'archive_dir = "{tmp_path / "a"}"\nreports_dir = "{tmp_path / "r"}"\n'
    )
    procs = {n: start(n, migrated, ops_file, tmp_path) for n in ("alpha", "beta")}
    try:
        first = wait_for(
            lambda: len(runs_by(engine)) >= 4 and runs_by(engine),
            "health runs",
            procs.values(),
            tmp_path,
        )
        leader = first[0][0]
        assert {h for h, _, _ in runs_by(engine)} == {leader}
        standby = "beta" if leader == "alpha" else "alpha"
        # The leader caught up the daily and monthly jobs once, at start.
        with engine.connect() as conn:
            caught = dict(
                conn.execute(
                    sa.select(JobRun.job, JobRun.holder).where(JobRun.job != "health")
                ).all()
            )
        assert set(caught) >= {"backup", "retention", "invoices", "reports"}
        assert set(caught.values()) == {leader}
        assert len(list((tmp_path / "b").iterdir())) == 1  # one backup, not two

        # Clean stop: the lease is released and the standby takes over.
        procs[leader].send_signal(signal.SIGTERM)
        assert procs[leader].wait(timeout=DEADLINE_S) == 0
        wait_for(
            lambda: any(h == standby for h, _, _ in runs_by(engine)),
            "takeover",
            [procs[standby]],
            tmp_path,
        )

        # Crash of the new leader: a third process takes over after the TTL.
        procs["gamma"] = start("gamma", migrated, ops_file, tmp_path)
        wait_for(
            lambda: _holder(engine) == standby,
            "standby holds the lease",
            [procs[standby]],
            tmp_path,
        )
        procs[standby].send_signal(signal.SIGKILL)
        procs[standby].wait(timeout=DEADLINE_S)
        wait_for(
            lambda: any(h == "gamma" for h, _, _ in runs_by(engine)),
            "gamma takes over",
            [procs["gamma"]],
            tmp_path,
        )
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                p.kill()
    runs = runs_by(engine)
    slots = [s for _, s, _ in runs]
    assert len(slots) == len(set(slots))  # no slot twice
    # Leadership moved leader -> standby -> gamma and never overlapped.
    order = [h for h, _, _ in runs]
    changes = [h for i, h in enumerate(order) if i == 0 or order[i - 1] != h]
    assert changes == [leader, standby, "gamma"]
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(SchedulerLease)) == 0


def _holder(engine) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(SchedulerLease.holder))
