"""Backups and restores on SQLite and a real PostgreSQL (and InfluxDB's export).

The backup runs as the scheduler's job; the restore must give back exactly
the data of the backup: same tables, row counts and content checksums, same
time-series points.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.demo.procs import free_port
from cloud.errors import TimeseriesError
from cloud.models import AuditEntry, Customer
from cloud.ops import backup
from cloud.ops.errors import BackupError, RestoreError
from cloud.ops.fingerprint import fingerprint
from cloud.ops.jobs import default_jobs
from cloud.ops.lease import Lease
from cloud.ops.scheduler import Scheduler
from cloud.timeseries import InfluxStore, Point, SqlStore
from cloud.timeseries.influx_wire import InfluxClient
from tests.support.ops import context, ops_settings, populate
from tests.support.postgres import session_server

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 14, 18, 0, tzinfo=UTC)  # 03:00 JST on the 15th: backup time


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def fresh_url(request, tmp_path, dialect: str, name: str) -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / name}.sqlite3"
    return session_server(request.config).create_database(name)


def scheduled_backup(engine, ops, clock, store=None):
    """Run the backup job the way the scheduler does (leader, claimed slot)."""
    lease = Lease(engine, "test-scheduler", 30, clock=clock)
    sched = Scheduler(
        engine,
        default_jobs(ops),
        lease,
        zone=ops.tz,
        clock=clock,
        context=lambda now: context(engine, ops, now, store=store),
    )
    assert lease.acquire()
    outcome = sched.fire("backup")
    assert outcome.ran and outcome.ok, outcome.detail
    return outcome


def state(engine):
    with engine.connect() as conn:
        tables = fingerprint(conn)
    points = list(SqlStore(engine).iter_points())
    return tables, points


def test_backup_job_then_restore_into_an_empty_database_gives_identical_data(
    request,
    engine,
    tmp_path,
):
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        populate(s, store, at=T0 - timedelta(days=2))
    before = state(engine)
    ops = ops_settings(tmp_path)
    outcome = scheduled_backup(engine, ops, Clock(T0))
    # The job read its backup back as a restore would (console: last backup).
    tables = "tables match" if engine.dialect.name == "sqlite" else "dump readable"
    assert "verified: 1 file checksums, " in outcome.detail and tables in outcome.detail
    [made] = backup.list_backups(ops.backup_dir)
    assert made.manifest["dialect"] == engine.dialect.name
    assert made.manifest["revision"] == db.head_revision()
    assert made.manifest["tables"]["ts_samples"]["rows"] == 600
    # SQL backend: the samples are in the database dump, not exported twice.
    assert made.manifest["timeseries"] is None

    target = fresh_url(request, tmp_path, engine.dialect.name, "restored")
    done = backup.restore(made.path, target, ops)
    assert done.tables == len(before[0])
    other = db.make_engine(target)
    try:
        after = state(other)
        db.require_current(other)  # the restored schema is the migrated head
    finally:
        other.dispose()
    # Every table: row count and content checksum. The scheduler's own rows
    # changed while the backup ran (its lease, its job run), so they match the
    # manifest rather than the state before: restore() checked that already.
    own = {"scheduler_leases", "job_runs"}
    assert {k: v for k, v in after[0].items() if k not in own} == {
        k: v for k, v in before[0].items() if k not in own
    }
    assert {k: after[0][k] for k in own} == {k: made.manifest["tables"][k] for k in own}
    assert after[0]["job_runs"]["rows"] == 1  # the backup's own run, as it was at dump time
    assert after[1] == before[1]  # every time-series point, value and flags
    assert len(after[1]) == 600


def test_restore_over_a_changed_database_needs_force_and_brings_the_backup_back(
    engine,
    migrated,
    tmp_path,
):
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        populate(s, store, at=T0 - timedelta(days=1))
    before = state(engine)
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, store, ops, T0)

    # Damage after the backup: rows deleted, changed and added, samples overwritten.
    with engine.begin() as conn:
        conn.execute(sa.delete(AuditEntry.__table__))
        conn.execute(sa.update(Customer.__table__).values(name="changed"))
    store.write([Point("T0001", "ior", int(T0.timestamp()) - 86400, 99.0)])
    store.write([Point("T9999", "ior", int(T0.timestamp()), 1.0)])
    assert state(engine) != before

    with pytest.raises(RestoreError, match="use force"):
        backup.restore(made.path, migrated, ops)
    engine.dispose()  # restore needs the services (here: our pool) off the database
    backup.restore(made.path, migrated, ops, force=True)
    assert state(engine) == before


def test_two_generations_are_kept_and_a_failed_backup_deletes_none(engine, tmp_path):
    ops = ops_settings(tmp_path, backup_generations=2)
    store = SqlStore(engine)
    made = [backup.make_backup(engine, store, ops, T0 + timedelta(days=d)) for d in range(3)]
    kept = backup.list_backups(ops.backup_dir)
    assert [b.path for b in kept] == [m.path for m in made[1:]]

    # A run that fails half-way (here: the export hits a full disk) leaves no
    # partial directory and removes nothing, even with generations = 1.
    broken = ops_settings(tmp_path, backup_generations=1, backup_timeseries="always")

    class Failing(SqlStore):
        def iter_points(self, page=10_000):
            raise OSError("disk full")
            yield  # pragma: no cover

    with pytest.raises(BackupError, match="disk full"):
        backup.make_backup(engine, Failing(engine), broken, T0 + timedelta(days=5))
    assert [b.path for b in backup.list_backups(ops.backup_dir)] == [m.path for m in made[1:]]
    assert not list((tmp_path / "backups").glob("*.partial"))


def test_a_damaged_backup_is_refused_before_anything_is_touched(engine, migrated, tmp_path):
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, SqlStore(engine), ops, T0)
    dump = made.path / made.manifest["database"]
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(RestoreError, match="damaged"):
        backup.restore(made.path, migrated, ops, force=True)
    manifest = json.loads((made.path / "manifest.json").read_text())
    manifest["version"] = 99
    (made.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RestoreError, match="version"):
        backup.read_backup(made.path)


def test_verification_reads_the_copy_not_only_the_checksums(engine, tmp_path):
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, SqlStore(engine), ops, T0)
    assert backup.verify(made, ops).startswith("verified: 1 file checksums")
    dump = made.path / made.manifest["database"]
    manifest = json.loads((made.path / "manifest.json").read_text())
    if engine.dialect.name == "sqlite":
        # A copy changed after the fact, its checksum "repaired": the rows tell.
        with sqlite3.connect(dump) as conn:
            conn.execute("DELETE FROM alembic_version")
        wrong = "differs from its manifest"
    else:
        dump.write_bytes(b"PGDMP" + b"\0" * 64)  # not an archive pg_restore reads
        wrong = "pg_restore --list exited"
    manifest["files"][dump.name] = hashlib.sha256(dump.read_bytes()).hexdigest()
    (made.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RestoreError, match=wrong):
        backup.verify(made, ops)


def test_restore_into_the_other_dialect_is_refused(engine, tmp_path):
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, SqlStore(engine), ops, T0)
    other = (
        "postgresql+psycopg://nobody@127.0.0.1:1/none"
        if engine.dialect.name == "sqlite"
        else f"sqlite:///{tmp_path / 'x.sqlite3'}"
    )
    with pytest.raises(RestoreError, match="target is"):
        backup.restore(made.path, other, ops)


def test_influx_time_series_are_exported_and_imported_point_for_point(
    engine,
    tmp_path,
    influx_store,
    request,
):
    base = int(T0.timestamp()) - 7200
    points = [Point("T0001", "ior", base + 10 * i, i / 7, i % 3, i % 5 == 0) for i in range(500)]
    points += [Point("T0002", "温度", base + 60 * i, 20.0 + i / 10) for i in range(50)]
    influx_store.write(points)
    ops = ops_settings(tmp_path)
    made = scheduled_backup(engine, ops, Clock(T0), store=influx_store)
    [found] = backup.list_backups(ops.backup_dir)
    assert found.manifest["timeseries_points"] == 550, made.detail

    from tests.support.influx import session_server as influx_server

    target = influx_server(request.config).store("restored")
    engine.dispose()
    done = backup.restore(found.path, engine.url, ops, store=target, force=True)
    assert done.timeseries_points == 550
    assert list(target.iter_points()) == list(influx_store.iter_points())
    assert sorted(p.key for p in target.iter_points()) == sorted(p.key for p in points)


def test_every_target_is_checked_before_anything_is_written(
    engine,
    tmp_path,
    influx_store,
    request,
):
    influx_store.write([Point("T0001", "ior", int(T0.timestamp()) - 60 * i, 1.0) for i in range(9)])
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, influx_store, ops, T0)
    target = fresh_url(request, tmp_path, engine.dialect.name, "checked")
    nowhere = InfluxStore(InfluxClient(f"http://127.0.0.1:{free_port()}", timeout=2), "drill")
    with pytest.raises(RestoreError, match="time-series target is not usable"):
        backup.restore(made.path, target, ops, store=nowhere)
    assert count_tables(target) == 0
    # A time-series target holding data is refused as a database would be.
    with pytest.raises(RestoreError, match="holds 1 series; use force"):
        backup.restore(made.path, target, ops, store=influx_store)
    assert count_tables(target) == 0


def test_a_restore_failing_half_way_leaves_both_targets_empty(
    engine,
    tmp_path,
    influx_store,
    request,
):
    points = [Point("T0001", "ior", int(T0.timestamp()) - 60 * i, 1.0) for i in range(30)]
    influx_store.write(points)
    ops = ops_settings(tmp_path)
    made = backup.make_backup(engine, influx_store, ops, T0)
    target_url = fresh_url(request, tmp_path, engine.dialect.name, "half")
    from tests.support.influx import session_server as influx_server

    class DiesMidImport(InfluxStore):
        """The scratch InfluxDB goes away after the first batch is stored."""

        writes = 0

        def import_(self, fileobj, batch=10):
            return super().import_(fileobj, batch)

        def write(self, batch):
            self.writes += 1
            if self.writes > 1:
                raise TimeseriesError("InfluxDB unreachable: connection refused")
            return super().write(batch)

    scratch = influx_server(request.config).store("half")
    dying = DiesMidImport(scratch.client, scratch.database)
    with pytest.raises(RestoreError, match=r"unreachable.*the restore was undone"):
        backup.restore(made.path, target_url, ops, store=dying, force=False)
    assert count_tables(target_url) == 0
    assert dying.writes == 2 and scratch.series() == []
    # The same targets take the whole backup afterwards.
    done = backup.restore(made.path, target_url, ops, store=scratch)
    assert done.timeseries_points == 30 and count_tables(target_url) > 10


def count_tables(url: str) -> int:
    opened = db.make_engine(url)
    try:
        with opened.connect() as conn:
            return len(sa.inspect(conn).get_table_names())
    finally:
        opened.dispose()


def test_backups_are_readable_by_the_service_account_only(engine, tmp_path):
    # Backups hold password hashes and forwarding HMAC secrets in clear. Under
    # the usual umask (022) files would be world-readable; they must not be.
    ops = ops_settings(tmp_path, backup_timeseries="always")
    old = os.umask(0o022)
    try:
        made = backup.make_backup(engine, SqlStore(engine), ops, T0)
    finally:
        os.umask(old)
    root = Path(ops.backup_dir)
    modes = {p.relative_to(root): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")}
    assert modes[made.path.relative_to(root)] == 0o700
    files = {p: m for p, m in modes.items() if (root / p).is_file()}
    assert len(files) == 3  # database, time-series export, manifest
    assert set(files.values()) == {0o600}, modes
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
