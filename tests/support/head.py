"""New databases at the schema's head, copied from one migrated once per process.

Running every Alembic migration takes one to three seconds per database on
the reference machine, and hundreds of tests want an empty database at
head, not the migrations themselves (``tests/integration/test_db_migrations.py``
runs those, with ``db.upgrade`` on empty databases). :func:`upgrade_to_head`
gives such a test the same database as ``db.upgrade(url)`` would: SQLite
gets a copy of a template file, PostgreSQL a database created from a
template database (``CREATE DATABASE ... TEMPLATE``) on the same server.
Each template is made with ``db.upgrade`` on first use in this process, so
it is always the head of the code under test. Under pytest-xdist every
worker makes its own.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL

from cloud import db

PG_TEMPLATE = "mimamori_head"

# template per SQLite or per PostgreSQL server (host:port): made once per process
_templates: dict[str, str] = {}


def upgrade_to_head(url: str) -> None:
    """Bring the new, empty database at ``url`` to head, as ``db.upgrade(url)`` does.

    SQLite: the file must not exist yet (or be empty). PostgreSQL: the
    database must exist, be empty and have no connections; it is dropped and
    created again from the template. Any other backend is migrated. Raises
    what ``db.upgrade`` or the driver raises; an SQLite file with content is
    a ``FileExistsError`` (copying over it would lose what it holds).
    """
    parsed = db.normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        target = Path(parsed.database)
        if target.exists() and target.stat().st_size:
            raise FileExistsError(f"{target} holds data: not replaced by the head template")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_sqlite_template(), target)
    elif backend == "postgresql" and parsed.database:
        _from_pg_template(parsed)
    else:
        db.upgrade(url)


def _sqlite_template() -> str:
    path = _templates.get("sqlite")
    if path is None:
        directory = tempfile.mkdtemp(prefix="mimamori-head-")
        atexit.register(shutil.rmtree, directory, True)
        path = str(Path(directory) / "head.sqlite3")
        db.upgrade(f"sqlite:///{path}")  # its engine is disposed: no -wal file is left
        _templates["sqlite"] = path
    return path


def _from_pg_template(parsed: URL) -> None:
    import psycopg

    server = f"{parsed.host}:{parsed.port}"
    admin = psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        if server not in _templates:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}"')
            admin.execute(f'CREATE DATABASE "{PG_TEMPLATE}"')
            # the migrations' engine has no pool: no connection stays on the
            # template, which CREATE DATABASE ... TEMPLATE requires
            db.upgrade(parsed.set(database=PG_TEMPLATE))
            _templates[server] = PG_TEMPLATE
        name = parsed.database
        admin.execute(f'DROP DATABASE "{name}"')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_templates[server]}"')
