"""A private PostgreSQL server for tests and benchmarks, and the DB fixtures.

:class:`PostgresServer` runs Debian's ``initdb``/``pg_ctl`` (from
``/usr/lib/postgresql/<ver>/bin``) on a temp directory and a free loopback
port, with durability switched off (tests want speed, not crash safety).
``initdb`` refuses to run as root, so as root everything runs as the
``postgres`` user via ``runuser`` and the temp directory is handed to it.
A missing installation is an error naming the package, never a skip.

Fixtures (registered in ``tests/conftest.py``, so a test just names them):
``db_url`` is parametrised over ``sqlite`` and ``postgresql`` and yields the
URL of a fresh, empty database for each test. The server is started once per
pytest session, on first use, and stopped when the session ends.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.demo.procs import free_port

START_TIMEOUT_S = 60


def find_bindir() -> Path:
    """Directory of the newest installed PostgreSQL server binaries."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "install the Debian package 'postgresql' (make system-deps)"
        )
    return Path(found[-1]).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster. Use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = 0
        self.tmp: Path | None = None
        self._as_postgres = os.geteuid() == 0
        self._databases = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # Callers read returncode and report stderr, hence check=False.
        return subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=START_TIMEOUT_S
        )

    def start(self) -> PostgresServer:
        self.tmp = Path(tempfile.mkdtemp(prefix="mimamori-pg-"))
        if self._as_postgres:
            shutil.chown(self.tmp, "postgres", "postgres")
        data = self.tmp / "data"
        done = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        # A taken port makes pg_ctl fail; pick another and retry.
        for _attempt in range(5):
            self.port = free_port()
            opts = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.tmp} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=50"
            )
            done = self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(self.tmp / "log"),
                "-o",
                opts,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            )
            if done.returncode == 0:
                self._wait_ready()
                return self
        log = (self.tmp / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start: {done.stderr}\n{log}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL not accepting connections on {self.port}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """Create a new empty database; return its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.tmp is None:
            return
        if (self.tmp / "data" / "postmaster.pid").exists():
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.tmp / "data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            )
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SERVER_KEY = pytest.StashKey[PostgresServer]()


def session_server(config: pytest.Config) -> PostgresServer:
    """The session's server, started on first use, stopped at session end.

    Kept in the pytest config stash rather than a session fixture, so a test
    that needs a second database (not a fixture) reaches the same server.
    """
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        server = PostgresServer().start()
        config.stash[_SERVER_KEY] = server
        config.add_cleanup(server.stop)
    return server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh empty database: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
    else:
        yield session_server(request.config).create_database()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh empty PostgreSQL database (no SQLite variant)."""
    return session_server(request.config).create_database()
