"""Wake the delivery worker when ledger rows are added, instead of polling.

Writer side: :func:`announce` is called by :func:`cloud.notify.ledger.insert`
(and by requeue) in the writer's transaction. The wake-up goes out only if
that transaction commits:

- PostgreSQL: ``NOTIFY mimamori_outbox`` in the transaction itself, which
  the server delivers at commit (and drops on rollback), to every worker on
  any host listening on the channel.
- SQLite (one host by nature): after the commit, a datagram to each worker's
  Unix socket in the directory ``<database file>.wake/``. A socket nobody
  reads any more (a worker killed with SIGKILL) is removed by the next writer.

Worker side: :class:`Listener` sets an event on each wake-up. A lost
wake-up costs latency, never a row: the worker still looks at the ledger
every ``--interval`` seconds and when the next retry is due. In-memory SQLite
has no file to put sockets next to; there the worker only polls.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("cloud.notify.wake")

CHANNEL = "mimamori_outbox"
_PENDING = "mimamori.outbox.wake"  # session.info: this transaction added rows
_HOOKED = "mimamori.outbox.hooked"  # session.info: after_commit listener installed
_NOTIFIED = "mimamori.outbox.notified"  # session.info: transaction that sent NOTIFY
# sun_path holds 108 bytes on Linux, the terminating NUL included.
_MAX_SOCKET_PATH = 107


def wake_dir(engine: Engine) -> Path | None:
    """Where SQLite workers keep their wake-up sockets (None: not a SQLite file)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).resolve()
    return path.with_name(path.name + ".wake")


def announce(session: Session) -> None:
    """Wake delivery workers once the session's transaction commits."""
    engine = session.get_bind()
    if engine.dialect.name == "postgresql":
        transaction = session.get_transaction()
        if session.info.get(_NOTIFIED) is not transaction:
            session.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            session.info[_NOTIFIED] = transaction
        return
    session.info[_PENDING] = True
    if not session.info.get(_HOOKED):
        sa.event.listen(session, "after_commit", _after_commit)
        sa.event.listen(session, "after_rollback", _after_rollback)
        session.info[_HOOKED] = True


def _after_commit(session: Session) -> None:
    if session.info.pop(_PENDING, False):
        directory = wake_dir(session.get_bind())  # type: ignore[arg-type]
        if directory is not None:
            poke(directory)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def poke(directory: Path) -> int:
    """Send one datagram to every worker socket in ``directory``; return how
    many took it. Never raises: a wake-up is an optimisation."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    woken = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        for name in names:
            path = directory / name
            try:
                sock.sendto(b"!", str(path))
                woken += 1
            except OSError as err:
                if err.errno == errno.ECONNREFUSED:  # nobody reads it: a dead worker's
                    with contextlib.suppress(OSError):
                        path.unlink()
                # EAGAIN: that worker has wake-ups queued already.
    return woken


class Listener:
    """Sets ``event`` whenever rows may have been added. A context manager;
    runs one daemon thread. On PostgreSQL it keeps its own connection (and
    reconnects, setting ``event``, after losing it)."""

    def __init__(self, engine: Engine, event: threading.Event) -> None:
        self.engine = engine
        self.event = event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.path: Path | None = None

    def __enter__(self) -> Listener:
        if self.engine.dialect.name == "postgresql":
            target = self._listen_postgres
        else:
            directory = wake_dir(self.engine)
            if directory is None:
                return self
            directory.mkdir(mode=0o700, exist_ok=True)
            path = directory / f"{os.getpid()}-{secrets.token_hex(4)}"
            if len(str(path)) > _MAX_SOCKET_PATH:
                log.warning("wake-up socket path too long (%s): polling only", path)
                return self
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.bind(str(path))
            self._sock.settimeout(0.5)
            self.path = path
            target = self._listen_socket
        self._thread = threading.Thread(target=target, name="outbox wake-up", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _listen_socket(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                self._sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self.event.set()

    def _listen_postgres(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.engine.raw_connection()
            except sa.exc.SQLAlchemyError as err:
                log.warning("wake-up listener: %s", err)
                self._stop.wait(1.0)
                continue
            try:
                # Before detach(): SQLAlchemy 2.1 forgets the driver connection then.
                conn: Any = raw.driver_connection
                raw.detach()  # this connection is ours alone, never back to the pool
                conn.autocommit = True
                conn.execute(f"LISTEN {CHANNEL}")
                self.event.set()  # rows may have come while nobody listened
                while not self._stop.is_set():
                    for _note in conn.notifies(timeout=0.5, stop_after=1):
                        self.event.set()
            except Exception as err:  # psycopg raises its own errors; reconnect on any
                log.warning("wake-up listener lost its connection: %s", err)
                self.event.set()
                self._stop.wait(1.0)
            finally:
                with contextlib.suppress(Exception):
                    raw.close()
