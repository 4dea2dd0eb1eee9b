"""Log retention on SQLite and a real PostgreSQL: 3 months online, then the
monthly gzip archive until 12 months old; evidence and samples pruned."""

from __future__ import annotations

import gzip
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.config import Settings
from cloud.models import AuditEntry
from cloud.models.ops import HealthCheck, JobRun
from cloud.ops import retention
from cloud.ops.jobs import default_jobs
from cloud.ops.lease import Lease
from cloud.ops.scheduler import Scheduler
from cloud.timeseries import Point, SqlStore
from tests.support.ops import context, ops_settings

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 6, 15, 4, 0, tzinfo=JST)  # retention runs at 04:00 JST
ONLINE_CUTOFF = datetime(2026, 3, 15, 4, 0, tzinfo=JST)


def audit(session, at: datetime, action: str) -> int:
    row = AuditEntry(
        at=at,
        actor="admin@example.com",
        action=action,
        object_type="user",
        object_id="7",
        details={"ip": "::1", "理由": "テスト"},
        ip="::1",
    )
    session.add(row)
    session.flush()
    return row.id


def archived(path: Path) -> list[dict]:
    return list(retention.read_archive(path))


def run_job(engine, ops, store=None, retention_days=None):
    def make_context(at):
        settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False),
            retention_days=retention_days or 0,
        )
        return context(engine, ops, at, store=store, settings=settings)

    sched = Scheduler(
        engine,
        default_jobs(ops),
        Lease(engine, "s", 30, clock=lambda: NOW),
        zone=ops.tz,
        clock=lambda: NOW,
        context=make_context,
    )
    sched.tick_lease()
    outcome = sched.fire("retention")
    assert outcome.ok and outcome.slot == "2026-06-15", outcome.detail
    return outcome


def test_audit_rows_move_to_monthly_archives_and_old_archives_go(engine, tmp_path):
    ops = ops_settings(tmp_path)
    with db.session_factory(engine)() as s:
        ids = {
            "ancient": audit(s, datetime(2025, 5, 10, tzinfo=JST), "login"),
            "july": audit(s, datetime(2025, 7, 1, 12, tzinfo=JST), "login.failed"),
            # 31 Jan 15:30 UTC is 1 Feb in JST: it belongs to February's archive.
            "feb": audit(s, datetime(2026, 1, 31, 15, 30, tzinfo=UTC), "terminal.create"),
            "just_old": audit(s, ONLINE_CUTOFF - timedelta(minutes=1), "user.lock"),
            "just_new": audit(s, ONLINE_CUTOFF + timedelta(minutes=1), "user.unlock"),
        }
        s.commit()
    outcome = run_job(engine, ops)
    assert "archived 4 audit rows" in outcome.detail
    root = tmp_path / "archive" / "audit"
    assert sorted(p.name for p in root.iterdir()) == [
        "2025-07.jsonl.gz",
        "2026-02.jsonl.gz",
        "2026-03.jsonl.gz",
    ]  # 2025-05 is past 1 year
    [july] = archived(root / "2025-07.jsonl.gz")
    assert july["id"] == ids["july"] and july["action"] == "login.failed"
    assert json.loads(json.dumps(july["details"])) == {"ip": "::1", "理由": "テスト"}
    assert [r["id"] for r in archived(root / "2026-02.jsonl.gz")] == [ids["feb"]]
    assert [r["id"] for r in archived(root / "2026-03.jsonl.gz")] == [ids["just_old"]]
    with engine.connect() as conn:
        assert conn.scalars(sa.select(AuditEntry.id)).all() == [ids["just_new"]]


def test_a_crash_between_archiving_and_deleting_does_not_duplicate(engine, tmp_path):
    ops = ops_settings(tmp_path)
    with db.session_factory(engine)() as s:
        first = audit(s, datetime(2026, 3, 1, tzinfo=JST), "a")
        second = audit(s, datetime(2026, 3, 2, tzinfo=JST), "b")
        s.commit()
    path = tmp_path / "archive" / "audit" / "2026-03.jsonl.gz"
    # The previous run archived `first` and died before deleting it.
    retention.append_archive(path, [json.dumps({"id": first, "action": "a"})])
    run_job(engine, ops)
    assert [r["id"] for r in archived(path)] == [first, second]
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0
    # The archive is one valid multi-member gzip file.
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert len(fh.read().splitlines()) == 2


def test_log_files_are_archived_per_month_and_stem(engine, tmp_path):
    ops = ops_settings(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    line = json.dumps(
        {"ts": "2026-03-14T01:00:00+00:00", "level": "INFO", "msg": "ログイン"}, ensure_ascii=False
    )
    (logs / "web-activity.2026-03-14.jsonl").write_text(line + "\nnot json\n", encoding="utf-8")
    (logs / "web-activity.2026-03-15.jsonl").write_text(line + "\n", encoding="utf-8")
    (logs / "web-security.2026-02-01.jsonl").write_text(line + "\n", encoding="utf-8")
    (logs / "ingest-error.2025-05-01.jsonl").write_text(line + "\n", encoding="utf-8")
    (logs / "notes.txt").write_text("keep me")
    # A previous run archived this day but died before deleting it.
    crashed = logs / "web-activity.2026-03-01.jsonl"
    crashed.write_text(line + "\n", encoding="utf-8")
    archive = tmp_path / "archive" / "logs" / "web-activity" / "2026-03.jsonl.gz"
    retention.append_archive(
        archive, [json.dumps({"archived_file": crashed.name, "lines": 1}), line]
    )

    run_job(engine, ops)
    assert sorted(p.name for p in logs.iterdir()) == ["notes.txt", "web-activity.2026-03-15.jsonl"]
    march = archived(archive)
    assert march == [
        {"archived_file": "web-activity.2026-03-01.jsonl", "lines": 1},
        json.loads(line),
        {"archived_file": "web-activity.2026-03-14.jsonl", "lines": 2},
        json.loads(line),
        {"raw": "not json"},
    ]
    assert (
        archived(tmp_path / "archive" / "logs" / "web-security" / "2026-02.jsonl.gz")[1]["msg"]
        == "ログイン"
    )
    # Older than a year: archived and deleted in the same run.
    assert list((tmp_path / "archive" / "logs" / "ingest-error").glob("*.gz")) == []


def test_evidence_older_than_13_months_and_old_samples_are_deleted(engine, tmp_path):
    ops = ops_settings(tmp_path)
    old = datetime(2025, 5, 14, tzinfo=JST)
    kept = datetime(2025, 5, 16, tzinfo=JST)
    with db.session_factory(engine)() as s:
        for at in (old, kept):
            s.add(HealthCheck(component="web", at=at, ok=True))
            s.add(
                JobRun(
                    job="backup", slot=at.date().isoformat(), holder="x", status="ok", started_at=at
                )
            )
        s.commit()
    store = SqlStore(engine)
    day = 86400
    now_ts = int(NOW.timestamp())
    store.write(
        [Point("T1", "ior", now_ts - 401 * day, 1.0), Point("T1", "ior", now_ts - 399 * day, 2.0)]
    )
    run_job(engine, ops, store=store, retention_days=400)
    with engine.connect() as conn:
        assert conn.scalars(sa.select(HealthCheck.at)).all() == [kept]
        slots = conn.scalars(sa.select(JobRun.slot).where(JobRun.job == "backup")).all()
        assert slots == [kept.date().isoformat()]
    assert [p.value for p in store.iter_points()] == [2.0]


def test_months_before_clamps_to_the_end_of_shorter_months():
    at = datetime(2026, 5, 31, 10, 0, tzinfo=JST)
    assert retention.months_before(at, 3) == datetime(2026, 2, 28, 10, 0, tzinfo=JST)
    assert retention.months_before(at, 15) == datetime(2025, 2, 28, 10, 0, tzinfo=JST)
    assert retention.months_before(datetime(2028, 5, 30, tzinfo=JST), 3).day == 29  # leap
    assert retention.months_before(datetime(2026, 1, 15, tzinfo=JST), 12).year == 2025


def test_archives_are_readable_by_the_service_account_only(tmp_path):
    path = tmp_path / "archive" / "audit" / "2026-01.jsonl.gz"
    old = os.umask(0o022)
    try:
        retention.append_archive(path, ['{"id": 1}'])
        retention.append_archive(path, ['{"id": 2}'])
    finally:
        os.umask(old)
    assert [r["id"] for r in retention.read_archive(path)] == [1, 2]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
