"""Backups of the relational database and the time series, and their restore.

One run writes one directory ``<backup_dir>/<UTC stamp>/``::

    manifest.json          format, version, dialect, revision, file checksums,
                           per-table row counts and content checksums
    database.sqlite3       SQLite: a copy made with the online backup API
    database.pgdump        PostgreSQL: pg_dump custom format
    timeseries.jsonl.gz    the time-series export (cloud.timeseries.backup)

The directory is written as ``<stamp>.partial`` and renamed when complete,
so a crash never leaves something that looks like a backup. Only after a
successful run are generations beyond ``backup_generations`` deleted: a
failing backup never removes the last good one.

Consistency: the table checksums are taken from the same snapshot as the
dump (the SQLite copy itself; for PostgreSQL, ``pg_dump --snapshot`` of the
REPEATABLE READ transaction that computes them). :func:`restore` recomputes
them on the restored database and fails loudly on any difference.

The time series are exported when they are not inside the database (InfluxDB
backend) or when ``backup_timeseries = "always"``. With the SQL backend they
are tables of the dump already, covered by the table checksums.

A backup holds password hashes and forwarding and webhook signing secrets in
clear: directories are 0700 and files 0600, whatever the umask, and the
backup root loses group and world access (docs/security.md).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from cloud import db
from cloud.errors import BackupFormatError, TimeseriesError
from cloud.ops.errors import BackupError, RestoreError
from cloud.ops.fingerprint import Fingerprint, differences, fingerprint, table_names
from cloud.ops.settings import OpsSettings
from cloud.timeseries import InfluxStore, SqlStore, TimeSeriesStore
from cloud.timeseries.points import MAX_TS

log = logging.getLogger(__name__)

FORMAT = "mimamori-backup"
VERSION = 1
MANIFEST = "manifest.json"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
TIMESERIES = "timeseries.jsonl.gz"
DB_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
STAMP = "%Y%m%dT%H%M%SZ"
DUMP_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class Backup:
    """A complete backup directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def created_at(self) -> str:
        return str(self.manifest["created_at"])


def wants_timeseries_export(store: TimeSeriesStore, ops: OpsSettings) -> bool:
    if ops.backup_timeseries == "always":
        return True
    if ops.backup_timeseries == "never":
        return False
    return not isinstance(store, SqlStore)


def make_backup(
    engine: Engine, store: TimeSeriesStore | None, ops: OpsSettings, now: datetime
) -> Backup:
    """Write one backup of ``engine``'s database (and ``store`` if it is to be
    exported) under ``ops.backup_dir``, then prune old generations.

    Raises :class:`BackupError` if anything fails; the partial directory is
    removed and older backups are kept.
    """
    root = Path(ops.backup_dir)
    root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _make_private(root)
    for stale in root.glob("*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    name = now.strftime(STAMP)
    if (root / name).exists():
        raise BackupError(f"backup {root / name} exists already")
    tmp = root / f"{name}.partial"
    # Nobody but the service account can enter it while the files are written
    # (with whatever mode the process umask gives); they end up 0600.
    tmp.mkdir(mode=PRIVATE_DIR)
    os.chmod(tmp, PRIVATE_DIR)
    try:
        manifest = _write(engine, store, ops, now, tmp)
        _write_json(tmp / MANIFEST, manifest)
        for part in tmp.iterdir():
            os.chmod(part, PRIVATE_FILE)
            _fsync_file(part)
        _fsync_dir(tmp)
        tmp.rename(root / name)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(root, ops.backup_generations)
    return Backup(root / name, manifest)


def _make_private(root: Path) -> None:
    """Take group and world access away from the backup root, if it has any."""
    if root.stat().st_mode & 0o077:
        try:
            os.chmod(root, PRIVATE_DIR)
        except OSError as err:  # not ours: say so, the backups inside are private anyway
            log.warning("backup directory %s is open to others and not ours to fix: %s", root, err)


def _write(
    engine: Engine, store: TimeSeriesStore | None, ops: OpsSettings, now: datetime, out: Path
) -> dict[str, Any]:
    dialect = engine.dialect.name
    if dialect not in DB_FILES:
        raise BackupError(f"cannot back up a {dialect} database")
    db_file = out / DB_FILES[dialect]
    if dialect == "sqlite":
        tables = _sqlite_backup(engine, db_file)
    else:
        tables = _pg_dump(engine, db_file, ops)
    files = {db_file.name: _sha256(db_file)}
    points = None
    if store is not None and wants_timeseries_export(store, ops):
        try:
            with gzip.open(out / TIMESERIES, "wb") as fh:
                points = store.export(cast(IO[bytes], fh))
        except (TimeseriesError, OSError) as err:
            raise BackupError(f"time-series export failed: {err}") from err
        files[TIMESERIES] = _sha256(out / TIMESERIES)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": now.isoformat(),
        "dialect": dialect,
        "revision": db.current_revision(engine),
        "database": db_file.name,
        "timeseries": TIMESERIES if points is not None else None,
        "timeseries_points": points,
        "files": files,
        "tables": tables,
    }


# -- SQLite --------------------------------------------------------------------


def _sqlite_backup(engine: Engine, target: Path) -> Fingerprint:
    """Copy with SQLite's online backup API (consistent while others write)."""
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        if not isinstance(source, sqlite3.Connection):
            raise BackupError("SQLite backup needs the sqlite3 driver")
        dest = sqlite3.connect(target)
        try:
            source.backup(dest)
            # A plain rollback-journal file: reading the copy creates no -wal files.
            dest.execute("PRAGMA journal_mode=DELETE")
            check = dest.execute("PRAGMA integrity_check").fetchone()
        finally:
            dest.close()
    except sqlite3.Error as err:
        raise BackupError(f"SQLite backup failed: {err}") from err
    finally:
        raw.close()
    if check is None or check[0] != "ok":
        raise BackupError(f"backup copy fails integrity_check: {check}")
    return _sqlite_fingerprint(target)


def _sqlite_fingerprint(path: Path) -> Fingerprint:
    engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            return fingerprint(conn)
    finally:
        engine.dispose()


def _sqlite_restore(source: Path, url: URL) -> None:
    target = Path(str(url.database))
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dest = sqlite3.connect(target)
    try:
        src.backup(dest)
        dest.execute("PRAGMA journal_mode=WAL")  # what cloud.db opens it with
    except sqlite3.Error as err:
        raise RestoreError(f"SQLite restore into {target} failed: {err}") from err
    finally:
        dest.close()
        src.close()


# -- PostgreSQL ----------------------------------------------------------------


def _pg_tool(ops: OpsSettings, name: str) -> str:
    path = Path(ops.pg_bin_dir) / name if ops.pg_bin_dir else shutil.which(name)
    if path is None or not Path(path).exists():
        raise BackupError(
            f"{name} not found: install the Debian package 'postgresql-client' or set pg_bin_dir"
        )
    return str(path)


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and an environment carrying it."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def _run(cmd: list[str], env: dict[str, str], what: str, error: type[Exception]) -> None:
    try:
        done = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise error(f"{what} failed: {err}") from err
    if done.returncode != 0:
        raise error(f"{what} exited {done.returncode}: {done.stderr.strip()[-2000:]}")


def _pg_dump(engine: Engine, target: Path, ops: OpsSettings) -> Fingerprint:
    uri, env = _libpq(engine.url)
    with engine.connect() as plain:
        conn = plain.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            # pg_dump reads the snapshot this open transaction exported, so the
            # dump and the checksums below see exactly the same data.
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
            _run(
                [
                    _pg_tool(ops, "pg_dump"),
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={target}",
                    f"--dbname={uri}",
                ],
                env,
                "pg_dump",
                BackupError,
            )
            return fingerprint(conn)


def _pg_restore(source: Path, url: URL, tool: str) -> None:
    # The target was emptied first (_drop_tables), so the result is exactly
    # the backup even if it had tables the backup does not know.
    uri, env = _libpq(url)
    _run(
        [
            tool,
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={uri}",
            str(source),
        ],
        env,
        "pg_restore",
        RestoreError,
    )


# -- reading and restoring -------------------------------------------------------


def read_backup(path: Path | str) -> Backup:
    """Open a backup directory and check its manifest and file checksums.

    Raises :class:`RestoreError` for a missing or foreign manifest, a newer
    version or a file whose checksum does not match (a damaged copy).
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RestoreError(f"{path}: no readable {MANIFEST}: {err}") from err
    if manifest.get("format") != FORMAT:
        raise RestoreError(f"{path}: not a mimamori backup")
    if manifest.get("version") != VERSION:
        raise RestoreError(f"{path}: backup version {manifest.get('version')!r}, need {VERSION}")
    for name, digest in manifest.get("files", {}).items():
        if not (path / name).is_file():
            raise RestoreError(f"{path}: {name} is missing")
        if _sha256(path / name) != digest:
            raise RestoreError(f"{path}: {name} is damaged (checksum differs)")
    return Backup(path, manifest)


def verify(found: Backup, ops: OpsSettings) -> str:
    """Check a backup as a restore would read it, without restoring: the
    files against the manifest's checksums (:func:`read_backup`), then the
    database copy itself: SQLite's copy must open read-only and hold exactly
    the manifest's rows (table checksums); a PostgreSQL dump must list its
    contents with ``pg_restore --list``. Returns what was checked; raises
    :class:`RestoreError` (damaged) or :class:`BackupError` (no tool)."""
    found = read_backup(found.path)
    database = found.path / str(found.manifest["database"])
    if found.manifest["dialect"] == "sqlite":
        try:
            have = _sqlite_fingerprint(database)
        except sa.exc.SQLAlchemyError as err:
            raise RestoreError(f"{database}: does not open: {err}") from err
        wrong = differences(found.manifest["tables"], have)
        if wrong:
            raise RestoreError(f"{database}: differs from its manifest: {'; '.join(wrong[:5])}")
        what = f"{len(have)} tables match"
    else:
        _run(
            [_pg_tool(ops, "pg_restore"), "--list", str(database)],
            dict(os.environ),
            "pg_restore --list",
            RestoreError,
        )
        what = "dump readable"
    return f"verified: {len(found.manifest['files'])} file checksums, {what}"


@dataclass(frozen=True)
class Restored:
    backup: Path
    tables: int
    rows: int
    timeseries_points: int | None


def restore(
    backup: Path | str,
    database_url: str | URL,
    ops: OpsSettings,
    *,
    store: TimeSeriesStore | None = None,
    force: bool = False,
) -> Restored:
    """Restore ``backup`` into the database at ``database_url`` and, when the
    backup has a time-series export and ``store`` is given, import it there.

    Stop the web, ingest and scheduler processes first. Every target is
    checked before anything is written: the backup's checksums, the
    database (reachable, same dialect, empty unless ``force``, restore tool
    present) and the store (reachable, its InfluxDB database created if
    missing, empty unless ``force``). ``force`` replaces what the targets
    hold. The restored tables are checked against the manifest's checksums
    and the imported point count against the export's; if that or any later
    step fails, both targets are emptied again, so a failed restore never
    leaves half a backup behind. Raises :class:`RestoreError`.
    """
    found = read_backup(backup)
    manifest = found.manifest
    url = db.normalize_url(database_url)
    dialect = url.get_backend_name()
    if dialect != manifest["dialect"]:
        raise RestoreError(f"backup is of a {manifest['dialect']} database, target is {dialect}")
    tool = _check_database_target(url, ops, force)
    if not manifest.get("timeseries"):
        store = None
    # A store inside the target database is checked and emptied with it.
    outside = store if store is not None and not _inside(store, url) else None
    if outside is not None:
        _check_store_target(outside, force)
    try:
        if outside is not None and force:
            _clear(outside)
        _drop_tables(url)
        source = found.path / manifest["database"]
        if dialect == "sqlite":
            _sqlite_restore(source, url)
        else:
            _pg_restore(source, url, tool)
        have = _fingerprint_of(url)
        problems = differences(manifest["tables"], have)
        if problems:
            raise RestoreError("restored database differs from the backup: " + "; ".join(problems))
        points = None if store is None else _import(found, store)
    except (RestoreError, TimeseriesError, sa.exc.SQLAlchemyError, OSError) as err:
        _undo(url, outside)
        raise RestoreError(f"{err}; the restore was undone: the targets are empty") from err
    rows = sum(t["rows"] for t in have.values())
    return Restored(found.path, len(have), rows, points)


def _check_database_target(url: URL, ops: OpsSettings, force: bool) -> str:
    """Raise RestoreError unless the database can take the restore; the
    restore tool's path for PostgreSQL ("" for SQLite)."""
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise RestoreError("restore needs an SQLite file, not an in-memory database")
        tool = ""
    else:
        try:
            tool = _pg_tool(ops, "pg_restore")
        except BackupError as err:
            raise RestoreError(str(err)) from err
    target = url.render_as_string(hide_password=True)
    try:
        engine = db.make_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                tables = table_names(conn)
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as err:
        raise RestoreError(f"target database {target} is not usable: {err}") from err
    if tables and not force:
        raise RestoreError(
            f"target database {target} holds {len(tables)} tables; use force to overwrite"
        )
    return tool


def _check_store_target(store: TimeSeriesStore, force: bool) -> None:
    try:
        try:
            store.prepare()
        except TimeseriesError:
            if not isinstance(store, InfluxStore):
                raise
            store.create_database()  # a scratch server for a drill has none yet
            store.prepare()
        held = store.series()
    except TimeseriesError as err:
        raise RestoreError(f"time-series target is not usable: {err}") from err
    if held and not force:
        raise RestoreError(f"time-series target holds {len(held)} series; use force to overwrite")


def _inside(store: TimeSeriesStore, url: URL) -> bool:
    return isinstance(store, SqlStore) and store.engine.url == url


def _drop_tables(url: URL) -> None:
    engine = db.make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            if url.get_backend_name() == "sqlite":
                # No CASCADE there: drop in foreign-key order instead.
                tables = sa.MetaData()
                tables.reflect(conn)
                tables.drop_all(conn)
                return
            for name in table_names(conn):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    finally:
        engine.dispose()


def _fingerprint_of(url: URL) -> Fingerprint:
    engine = db.make_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return fingerprint(conn)
    finally:
        engine.dispose()


def _import(found: Backup, store: TimeSeriesStore) -> int:
    expected = found.manifest["timeseries_points"]
    try:
        with gzip.open(found.path / found.manifest["timeseries"], "rb") as fh:
            points = store.import_(cast(IO[bytes], fh))
    except (TimeseriesError, BackupFormatError, OSError) as err:
        raise RestoreError(f"time-series import failed: {err}") from err
    if points != expected:
        raise RestoreError(f"imported {points} time-series points, backup has {expected}")
    return points


def _clear(store: TimeSeriesStore) -> None:
    """Delete every sample (the last whole day before the store's horizon)."""
    store.delete_before(MAX_TS - MAX_TS % 86400)


def _undo(url: URL, store: TimeSeriesStore | None) -> None:
    """Empty both targets after a failed restore; a failure here is reported
    with the original error, never instead of it."""
    try:
        _drop_tables(url)
    except sa.exc.SQLAlchemyError as err:
        log.error("undoing the restore: could not empty the database: %s", err)
    if store is not None:
        try:
            _clear(store)
        except TimeseriesError as err:
            log.error("undoing the restore: could not empty the time-series target: %s", err)


def list_backups(root: Path | str) -> list[Backup]:
    """Complete backups under ``root``, oldest first (checksums not verified)."""
    out: list[Backup] = []
    root = Path(root)
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.endswith(".partial") and (path / MANIFEST).is_file():
            try:
                manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if manifest.get("format") == FORMAT:
                out.append(Backup(path, manifest))
    return out


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete backups; return what was deleted."""
    backups = list_backups(root)
    doomed = [b.path for b in backups[: max(0, len(backups) - keep)]]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
