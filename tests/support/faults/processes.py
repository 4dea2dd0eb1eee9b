"""Processes the fault tests kill and restart: the ingest worker, the alarm sweep, PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from cloud import db
from cloud.alarms import sweep
from cloud.timeseries import SqlStore
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker
from tests.support.postgres import PostgresServer


class IngestProcess(S.IngestProcess):
    """The shared ingest process in the faults' group, with a database URL; its
    ``stop`` never fails a test that already killed things around it."""

    def __init__(
        self,
        broker: MosquittoBroker,
        workdir: Path,
        db_url: str,
        client_id: str = "ingest-faults",
        extra: Iterable[str] = (),
    ) -> None:
        super().__init__(
            broker, workdir, client_id, "faults", {"MIMAMORI_DATABASE_URL": db_url}, extra=extra
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------- alarms


class AlarmSweeper:
    """The scheduler's ``alarm_sweep`` job in a thread: the real
    :func:`cloud.alarms.sweep` (offline, stale, demand, reminders) with the
    wall clock and the SQL time-series store, every ``period`` seconds
    against the database at ``url``. The scheduler runs it every 60 s; a
    test's offline limits are seconds, so it comes round as often here.
    Like the scheduler, a failed run is recorded (:attr:`errors`) and the
    next one runs anyway.
    """

    def __init__(self, url: str, period: float = 0.5) -> None:
        self.period = period
        self.runs = 0
        self.marked_offline = 0  # SweepResult.offline, summed
        self.errors: list[str] = []
        self._engine = db.make_engine(url)
        self._sessions = db.session_factory(self._engine)
        self._store = SqlStore(self._engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-sweep", daemon=True)

    def start(self) -> AlarmSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._sessions() as session:
                    self.marked_offline += sweep(session, datetime.now(UTC), self._store).offline
            except Exception as err:  # the scheduler's boundary: log the run as failed
                self.errors.append(repr(err))
            self.runs += 1
            self._stop.wait(self.period)  # the job's period, not synchronisation

    def stop(self) -> None:
        """Stop after the run in progress (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        self._engine.dispose()


# ------------------------------------------------------------------- postgres


class KillablePostgres(PostgresServer):
    """The test PostgreSQL plus SIGKILL of the postmaster and a restart in place.

    The shared test server runs with ``synchronous_commit=off``: a commit
    returns before its WAL leaves the server's memory, so a SIGKILL loses
    commits the ingest already acknowledged (the first runs of
    ``test_sigkill_postgres`` lost frames exactly that way). Production runs
    with it on, and so does this server (``ALTER SYSTEM``, then a restart
    without the command-line override). ``fsync=off`` stays: a
    process kill does not lose what is in the OS page cache.
    """

    def start(self) -> KillablePostgres:
        super().start()
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_commit = on")
        assert self.tmp is not None
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.tmp / "data"), "-m", "fast", "-w", "stop"
        )
        self.restart()
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row is not None and row[0] == "on", row
        return self

    def postmaster_pid(self) -> int:
        assert self.tmp is not None
        return int((self.tmp / "data" / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        pid = self.postmaster_pid()
        os.kill(pid, signal.SIGKILL)
        S.wait_for(lambda: not _running(pid), 10, "the postmaster to die")

    def restart(self) -> None:
        """Start again on the same port and data; crash recovery runs first.

        Orphaned backends may hold the shared memory a moment after the
        postmaster died; pg_ctl refuses until they are gone, so retry.
        """
        assert self.tmp is not None
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.tmp} "
            "-c fsync=off -c full_page_writes=off -c max_connections=50"
        )
        deadline = time.monotonic() + 60
        while True:
            done = self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.tmp / "data"),
                "-l",
                str(self.tmp / "log"),
                "-o",
                opts,
                "-w",
                "start",
            )
            if done.returncode == 0:
                self._wait_ready()
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not restart: {done.stderr}")
            time.sleep(0.2)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie is dead, only not reaped yet
