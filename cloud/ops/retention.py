"""Log retention: online for ``log_online_months``, then a monthly gzip
JSON-lines archive until ``log_archive_months`` old, then gone.

What is kept this way:

- the audit log table (activity and security actions): rows older than the
  online period are appended to ``<archive_dir>/audit/<YYYY-MM>.jsonl.gz``
  (month of the row's time in the operations zone), then deleted;
- the log files of :mod:`cloud.ops.logfiles` (activity, error, security per
  role and day): day files older than the online period are appended to
  ``<archive_dir>/logs/<stem>/<YYYY-MM>.jsonl.gz``, then deleted.

Both ages count from the record's own time: with the defaults a record is
online for 3 months and in the archive until it is 12 months old. A monthly
archive is deleted once its whole month is older than that.

Crash safety: an archive is never appended in place. The old archive bytes
plus one new gzip member are written to a temporary file that replaces the
archive atomically, and only then are the rows or files deleted. A crash in
between leaves the data in both places, and the next run does not archive it
twice: audit rows are skipped by id, and each archived log file is preceded
by a marker line ``{"archived_file": name, "lines": n}`` that is checked.

The same job also applies the other retention periods: time-series samples
(``retention_days`` of the cloud settings) and the availability evidence
(health checks and job runs, ``evidence_months``).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloud.models.audit import AuditEntry
from cloud.models.ops import HealthCheck, JobRun
from cloud.ops.fingerprint import canonical
from cloud.ops.logfiles import parse_name

AUDIT_DIR = "audit"
LOGS_DIR = "logs"
ARCHIVE_SUFFIX = ".jsonl.gz"


def months_before(at: datetime, months: int) -> datetime:
    """The same wall-clock time ``months`` calendar months earlier (the day
    clamped to the target month's length: 31 May - 3 months = 28/29 Feb)."""
    index = at.year * 12 + at.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    last = (date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)).day
    return at.replace(year=year, month=month, day=min(at.day, last))


@dataclass
class Report:
    audit_rows: int = 0
    log_files: int = 0
    log_lines: int = 0
    archives_deleted: list[str] = field(default_factory=list)
    health_rows: int = 0
    job_rows: int = 0
    samples_before: int | None = None

    def summary(self) -> str:
        return (
            f"archived {self.audit_rows} audit rows, {self.log_files} log files "
            f"({self.log_lines} lines); deleted {len(self.archives_deleted)} old archives, "
            f"{self.health_rows} health rows, {self.job_rows} job runs"
            + (f"; samples before {self.samples_before} deleted" if self.samples_before else "")
        )


# -- archive files ---------------------------------------------------------------


def month_key(at: datetime | date, zone: ZoneInfo | None = None) -> str:
    if isinstance(at, datetime):
        at = at.astimezone(zone).date() if zone is not None else at.date()
    return f"{at.year:04d}-{at.month:02d}"


def read_archive(path: Path) -> Iterator[dict[str, Any]]:
    """Every JSON object of a (multi-member) gzip JSON-lines archive."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def append_archive(path: Path, lines: Iterable[str]) -> int:
    """Atomically replace ``path`` by its old bytes plus one gzip member of
    ``lines`` (each a JSON text without newline); return the lines written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    # Audit records name people and addresses: the archive is the service's only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an old .tmp left by a crash keeps its mode otherwise
    with os.fdopen(fd, "wb") as out:
        if path.exists():
            with path.open("rb") as old:
                while chunk := old.read(1 << 20):
                    out.write(chunk)
        with gzip.GzipFile(fileobj=out, mode="wb") as gz:
            for line in lines:
                gz.write(line.encode("utf-8") + b"\n")
                n += 1
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return n


# -- the audit table ---------------------------------------------------------------


def archive_audit(
    engine: Engine, archive_dir: Path, cutoff: datetime, zone: ZoneInfo, batch: int = 2000
) -> int:
    """Move audit rows with ``at < cutoff`` into the monthly archives; return
    how many rows left the table."""
    table = AuditEntry.metadata.tables[AuditEntry.__tablename__]
    columns = [c.name for c in table.columns]
    known: dict[str, set[int]] = {}
    moved = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(table).where(table.c.at < cutoff).order_by(table.c.id).limit(batch)
            ).all()
            if not rows:
                return moved
            by_month: dict[str, list[str]] = defaultdict(list)
            for row in rows:
                key = month_key(row.at, zone)
                path = archive_dir / AUDIT_DIR / f"{key}{ARCHIVE_SUFFIX}"
                if key not in known:
                    known[key] = (
                        {int(r["id"]) for r in read_archive(path)} if path.exists() else set()
                    )
                if row.id in known[key]:
                    continue  # archived by a run that crashed before deleting
                record = {c: canonical(v) for c, v in zip(columns, row, strict=True)}
                by_month[key].append(json.dumps(record, ensure_ascii=False, sort_keys=True))
                known[key].add(row.id)
            for key, lines in by_month.items():
                append_archive(archive_dir / AUDIT_DIR / f"{key}{ARCHIVE_SUFFIX}", lines)
            conn.execute(sa.delete(table).where(table.c.id.in_([r.id for r in rows])))
            moved += len(rows)


# -- log files -----------------------------------------------------------------------


def archive_log_files(log_dir: Path, archive_dir: Path, cutoff: date) -> tuple[int, int]:
    """Move day files older than ``cutoff`` into monthly archives per stem;
    return (files, lines) moved. Files not named by :mod:`.logfiles` are left."""
    if not log_dir.is_dir():
        return 0, 0
    pending: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(log_dir.iterdir()):
        parsed = parse_name(path.name)
        if parsed is None or not path.is_file():
            continue
        stem, day = parsed
        if day < cutoff:
            archive = archive_dir / LOGS_DIR / stem / f"{month_key(day)}{ARCHIVE_SUFFIX}"
            pending[archive].append(path)
    files = lines = 0
    for archive, sources in pending.items():
        done = _markers(archive)
        out: list[str] = []
        for source in sources:
            if source.name in done:
                continue
            body = [
                ln.rstrip("\n")
                for ln in source.read_text(encoding="utf-8", errors="replace").splitlines()
            ]
            body = [
                ln if _is_json(ln) else json.dumps({"raw": ln}, ensure_ascii=False)
                for ln in body
                if ln.strip()
            ]
            out.append(json.dumps({"archived_file": source.name, "lines": len(body)}))
            out.extend(body)
            lines += len(body)
        if out:
            append_archive(archive, out)
        for source in sources:
            source.unlink()
            files += 1
    return files, lines


def _markers(archive: Path) -> set[str]:
    if not archive.exists():
        return set()
    return {str(r["archived_file"]) for r in read_archive(archive) if "archived_file" in r}


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def prune_archives(archive_dir: Path, cutoff: datetime, zone: ZoneInfo) -> list[Path]:
    """Delete monthly archives whose whole month lies before ``cutoff``."""
    limit = month_key(cutoff, zone)
    doomed = []
    for path in sorted(archive_dir.rglob(f"*{ARCHIVE_SUFFIX}")):
        key = path.name[: -len(ARCHIVE_SUFFIX)]
        if len(key) == 7 and key < limit:
            path.unlink()
            doomed.append(path)
    return doomed


# -- the job -----------------------------------------------------------------------


def run(
    engine: Engine,
    *,
    now: datetime,
    zone: ZoneInfo,
    log_dir: Path,
    archive_dir: Path,
    online_months: int,
    archive_months: int,
    evidence_months: int,
) -> Report:
    """Apply every log and evidence retention rule once (see the module doc)."""
    report = Report()
    online_cutoff = months_before(now.astimezone(zone), online_months)
    report.audit_rows = archive_audit(engine, archive_dir, online_cutoff, zone)
    report.log_files, report.log_lines = archive_log_files(
        log_dir, archive_dir, online_cutoff.date()
    )
    archive_cutoff = months_before(now.astimezone(zone), archive_months)
    report.archives_deleted = [
        str(p.relative_to(archive_dir)) for p in prune_archives(archive_dir, archive_cutoff, zone)
    ]
    evidence_cutoff = months_before(now.astimezone(zone), evidence_months)
    with engine.begin() as conn:
        report.health_rows = conn.execute(
            sa.delete(HealthCheck).where(HealthCheck.at < evidence_cutoff)
        ).rowcount
        report.job_rows = conn.execute(
            sa.delete(JobRun).where(JobRun.started_at < evidence_cutoff)
        ).rowcount
    return report
