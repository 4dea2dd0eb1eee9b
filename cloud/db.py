"""Engine and session factories, and schema migrations.

SQLite (the embedded default) is opened in WAL mode with foreign keys on and
a busy timeout, so the web, ingest and scheduler processes can share one file.
PostgreSQL URLs without a driver get psycopg 3 (the one driver we install).

The schema only ever comes from the Alembic revisions in
``cloud/migrations`` via :func:`upgrade`; nothing calls ``create_all``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from cloud.errors import DatabaseError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; pick psycopg 3 for bare ``postgresql://``/``postgres://``.

    Raises :class:`DatabaseError` for an unparsable URL.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as err:
        raise DatabaseError(f"bad database URL: {err}") from err
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine with the connection settings this project relies on.

    For SQLite files the parent directory is created, then every new
    connection gets ``journal_mode=WAL`` (readers never block the writer),
    ``foreign_keys=ON`` (off by default in SQLite!), ``synchronous=FULL``
    and a busy timeout. FULL because a commit is a promise here: the ingest
    acknowledges frames after it, and the terminals then delete them; with
    NORMAL a power cut could undo the last transactions before a checkpoint.
    Measured here it costs about 1 ms per commit (the ingest commits twice
    per batch of up to 500 frames).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, echo=echo, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, echo=echo, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cur.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``. Objects stay readable after commit
    (``expire_on_commit=False``) because views render them after the commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url: str | URL) -> Config:
    """An Alembic config for ``url`` driven from code (no alembic.ini needed).

    The URL travels in ``config.attributes`` rather than ``sqlalchemy.url``
    because the ini layer would mangle ``%`` in URL-encoded passwords.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = normalize_url(url)
    return cfg


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (creating it for SQLite).

    Raises :class:`DatabaseError` if the database cannot be reached or a
    migration fails; the failed migration's transaction is rolled back.
    """
    try:
        command.upgrade(alembic_config(url), revision)
    except sa.exc.SQLAlchemyError as err:
        raise DatabaseError(f"migration to {revision} failed: {err}") from err


def head_revision() -> str | None:
    """The newest revision shipped with this code."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database at ``engine`` is at (None if never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current(engine: Engine) -> None:
    """Raise :class:`DatabaseError` unless the database is at the shipped head
    (or, naming the setting, when it cannot be reached).

    Roles call this at start so a forgotten ``upgrade`` fails loudly instead
    of as a missing-column error in the middle of the night.
    """
    try:
        have = current_revision(engine)
    except sa.exc.OperationalError as err:
        # The setting, not a driver traceback: that is what the operator fixes.
        where = engine.url.render_as_string(hide_password=True)
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseError(
            f"database_url ($MIMAMORI_DATABASE_URL) {where}: unreachable: {reason}"
        ) from err
    want = head_revision()
    if have != want:
        raise DatabaseError(f"database is at revision {have}, code needs {want}: run upgrade")
