"""``python -m cloud.ops`` as an operator runs it, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.timeseries import SqlStore
from tests.support.ops import count, populate
from tests.support.postgres import free_port, session_server

pytestmark = pytest.mark.integration

AT = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)


def ops(tmp_path, url, *args, ok=True, env_extra=None):
    env = {**os.environ, "MIMAMORI_DATABASE_URL": url, **(env_extra or {})}
    env.pop("MIMAMORI_INSTANCE_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "cloud.ops", "--ops-file", str(tmp_path / "ops.toml"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def minutes(start: datetime, end: datetime) -> int:
    """Whole UTC minutes from the one holding ``start`` to the one holding ``end``."""
    first = start.astimezone(UTC).replace(second=0, microsecond=0)
    return int((end - first).total_seconds() // 60)


def test_backup_restore_invoice_and_figures_from_the_command_line(
    request,
    engine,
    migrated,
    tmp_path,
):
    (tmp_path / "ops.toml").write_text(
        f'backup_dir = "{tmp_path / "backups"}"\ncomponents = ["database", "timeseries"]\n'
        f'log_dir = "{tmp_path / "logs"}"\n',
        encoding="utf-8",
    )
    with db.session_factory(engine)() as s:
        populate(s, SqlStore(engine), at=AT)

    made = ops(tmp_path, migrated, "backup").stdout.strip()
    listed = ops(tmp_path, migrated, "backups").stdout
    assert made in listed and engine.dialect.name in listed

    if engine.dialect.name == "sqlite":
        target = f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    else:
        target = session_server(request.config).create_database("cli")
    out = ops(tmp_path, migrated, "restore", made, "--database-url", target).stdout
    assert "checksums match" in out
    refused = ops(tmp_path, migrated, "restore", made, "--database-url", target, ok=False)
    assert refused.returncode == 1 and "use force" in refused.stderr
    restored = db.make_engine(target)
    try:
        assert count(restored, "ts_samples") == 600 and count(restored, "audit_log") == 1
    finally:
        restored.dispose()

    issued = ops(tmp_path, migrated, "invoice", "--month", "2026-03").stdout
    number = issued.split()[1]
    assert issued.startswith("issued 202603-")
    pdf = tmp_path / "inv.pdf"
    ops(tmp_path, migrated, "invoice-file", number, "-o", str(pdf))
    assert pdf.read_bytes().startswith(b"%PDF")
    csv_text = ops(tmp_path, migrated, "invoice-file", number, "--format", "csv", "-o", "-").stdout
    assert "notification" in csv_text and "total" in csv_text

    report = ops(
        tmp_path,
        migrated,
        "report",
        "--customer",
        "1",
        "--month",
        "2026-03",
        "--format",
        "csv",
        "-o",
        "-",
    ).stdout
    assert "max_leakage" in report

    health = ops(tmp_path, migrated, "health", "--record").stdout
    assert "database     up" in health and "timeseries   up" in health
    assert count(engine, "health_checks") == 2
    with engine.connect() as conn:
        checked = conn.execute(sa.text("SELECT min(at) FROM health_checks")).scalar_one()
    if isinstance(checked, str):  # SQLite hands back the stored text
        checked = datetime.fromisoformat(checked)
    if checked.tzinfo is None:  # the minute of the check, stored as UTC
        checked = checked.replace(tzinfo=UTC)
    asking = datetime.now(UTC)
    figures = json.loads(ops(tmp_path, migrated, "availability", "--json").stdout)
    answered = datetime.now(UTC)
    # The service started with the check just recorded, and only completed
    # minutes count: none while the check's minute runs, so no percent yet.
    # (A command that starts slowly may be in a later minute already: then
    # the minutes completed since the check's count, and there is a percent.)
    service = figures["service"]
    assert minutes(checked, asking) <= service["total_minutes"] <= minutes(checked, answered)
    assert (service["percent"] is None) == (service["total_minutes"] == 0)
    assert [c["component"] for c in figures["components"]] == ["database", "timeseries"]

    start = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    ops(tmp_path, migrated, "announce", "--title", "保守", "--start", start, "--end", end)
    ran = ops(tmp_path, migrated, "run-job", "announcements").stdout
    assert "maintenance mails queued: 2" in ran  # the admin user and the alert target
    assert count(engine, "job_runs") == 1


def test_usage_errors_exit_2_and_name_the_problem(tmp_path):
    (tmp_path / "ops.toml").write_text("")
    done = ops(tmp_path, "sqlite:///x.sqlite3", "invoice", "--month", "March", ok=False)
    assert done.returncode == 2 and "is not YYYY-MM" in done.stderr
    done = ops(tmp_path, "sqlite:///x.sqlite3", "backups", ok=False)
    assert done.returncode == 1 and "run upgrade" in done.stderr


def test_a_restore_drill_names_every_target_or_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    db.upgrade(url)
    (tmp_path / "ops.toml").write_text(
        f'backup_dir = "{tmp_path / "backups"}"\nbackup_timeseries = "always"\n'
    )
    made = ops(tmp_path, url, "backup").stdout.strip()
    influx = {"MIMAMORI_TIMESERIES_BACKEND": "influx", "MIMAMORI_INFLUX_URL": "http://127.0.0.1:9"}
    scratch = f"sqlite:///{tmp_path / 'scratch.sqlite3'}"
    refusals = {
        ("--database-url", scratch): "needs --influx-database",
        ("--influx-database", "drill"): "need --database or --database-url",
        ("--database-url", scratch, "--influx-database", "mimamori"): "is the configured one",
    }
    for args, reason in refusals.items():
        done = ops(tmp_path, url, "restore", made, *args, ok=False, env_extra=influx)
        assert done.returncode == 1 and reason in done.stderr, done.stderr
    assert not (tmp_path / "scratch.sqlite3").exists()


def test_without_settings_nothing_runs_on_the_defaults(tmp_path):
    """The built-in defaults describe no site: 'no backups' or 'broker up'
    about them would mislead an operator who forgot --env-file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMAMORI_")}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "cloud.ops", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    for command in ("backups", "health"):
        done = run(command)
        assert done.returncode == 1 and "no settings: pass --env-file" in done.stderr
    missing = run("--env-file", str(tmp_path / "nowhere.env"), "backups")
    assert missing.returncode == 1 and "MIMAMORI_ENV_FILE" in missing.stderr
    (tmp_path / "away.env").write_text(
        f"MIMAMORI_DATABASE_URL=postgresql+psycopg://m:secret@127.0.0.1:{free_port()}/m\n"
    )
    away = run("--env-file", str(tmp_path / "away.env"), "backups")
    assert away.returncode == 1 and "Traceback" not in away.stderr
    assert "database_url ($MIMAMORI_DATABASE_URL)" in away.stderr and "unreachable" in away.stderr
    assert "secret" not in away.stderr
    url = f"sqlite:///{tmp_path / 'site.sqlite3'}"
    db.upgrade(url)
    (tmp_path / "site.env").write_text(
        f"MIMAMORI_DATABASE_URL={url}\nMIMAMORI_OPS_FILE={tmp_path / 'ops.toml'}\n"
    )
    (tmp_path / "ops.toml").write_text(f'backup_dir = "{tmp_path / "kept"}"\n')
    empty = run("--env-file", str(tmp_path / "site.env"), "backups")
    assert empty.returncode == 1 and f"no backup in {tmp_path / 'kept'}" in empty.stderr
