"""Run the ingest service in a writer process of its own.

Why: one worker is two kinds of work. Receiving (paho's Python MQTT
client: parsing packets, PUBACKs) and storing (decode, plan, SQL, the alarm
engine) each need most of a CPU core at full stream, and in one process they
take turns on the GIL: a worker on two cores stored ~7,000 frames/s. Split
over two processes, the receiver keeps taking messages while the writer
stores the previous batch.

:class:`RemoteService` has the interface :class:`~cloud.ingest.worker.IngestWorker`
uses (``process``, ``reject_all``, ``store.settle``) and forwards each call
over a pipe to a child process that owns the real
:class:`~cloud.ingest.service.IngestService` (built there by ``factory``, so
database connections are never shared across a fork). Guarantees:

- the worker still acknowledges a message only after ``process`` returned
  for its batch, i.e. after the writer committed it;
- errors keep their meaning: storage unreachable in the writer is raised here
  as :class:`~cloud.errors.DatabaseError` (the worker retries the batch with
  backoff), anything else as :class:`WriterError` (the worker splits the
  batch to find the bad message);
- the writer dying (killed, out of memory) is storage unavailable: the call
  raises :class:`~cloud.errors.DatabaseError` and the next call starts a new
  writer. Nothing was acknowledged for the batch in hand, so the broker
  redelivers and the receipts drop what had been stored;
- the receiver dying (even SIGKILL) ends the writer: it finishes the batch
  in hand (whose frames were never acknowledged, so the broker redelivers
  them and the receipts drop the copies), then notices that its parent is
  gone, or reads end-of-file, and exits without starting on a batch still
  waiting in the pipe.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from cloud import db
from cloud.config import Settings
from cloud.errors import CloudError, DatabaseError
from cloud.ingest.hooks import default_hooks
from cloud.ingest.service import BatchResult, Inbound, IngestService, ServiceOptions
from cloud.ingest.worker import TRANSIENT  # the worker's notion of "retry later"
from cloud.timeseries import make_store

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0  # a spawned interpreter imports SQLAlchemy, the models...
STOP_TIMEOUT_S = 10.0

ServiceFactory = Callable[[], IngestService]
_Wire = tuple[str, bytes, datetime]  # what of an Inbound the writer needs


class WriterError(CloudError):
    """The writer raised something other than "storage unavailable"."""


class _RemoteStore:
    """The part of the store the worker calls while idle."""

    def __init__(self, remote: RemoteService) -> None:
        self._remote = remote

    def settle(self) -> None:
        self._remote.call("settle", None)


class RemoteService:
    """An :class:`IngestService` living in a child process.

    ``factory`` must be picklable (a module-level function, or a
    ``functools.partial`` of one) and is called in the child. Construction
    starts the child and waits until the service is built; raises
    :class:`~cloud.errors.CloudError` if that fails (the child's error in the
    message). Not thread-safe: one caller, the worker's batch thread.
    """

    def __init__(self, factory: ServiceFactory, log_level: int | None = None) -> None:
        self.factory = factory
        self.log_level = logging.getLogger().level if log_level is None else log_level
        self.store = _RemoteStore(self)
        self._ctx = multiprocessing.get_context("spawn")
        self._proc: Any = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._pending = 0  # batches submitted whose result was not collected
        self.starts = 0
        self._start()

    @property
    def pid(self) -> int | None:
        """The writer's process id (None between a crash and the next call)."""
        return int(self._proc.pid) if self._proc is not None else None

    # -- the worker's interface ------------------------------------------------

    def process(self, batch: Sequence[Inbound]) -> BatchResult:
        """What ``IngestService.process`` returns for ``batch``, computed in the
        writer. Raises DatabaseError (transient) or WriterError (see module doc)."""
        wire: list[_Wire] = [(m.topic, bytes(m.payload), m.received_at) for m in batch]
        result = self.call("process", wire)
        assert isinstance(result, BatchResult)
        return result

    def submit(self, batch: Sequence[Inbound]) -> None:
        """Hand ``batch`` to the writer without waiting; :meth:`result` returns
        its outcome, in submission order. The writer works on one batch at a
        time, so a second submission waits in the pipe while the caller
        acknowledges the first: the writer never idles on the caller's
        PUBACKs. Raises DatabaseError if the writer is gone."""
        wire: list[_Wire] = [(m.topic, bytes(m.payload), m.received_at) for m in batch]
        if self._conn is None:
            self._start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send(("process", wire))
        except OSError as err:
            code = self._reap()
            raise DatabaseError(f"ingest writer process ended (exit {code})") from err
        self._pending += 1

    def result(self) -> BatchResult:
        """The outcome of the oldest submitted batch not yet collected; raises
        as :meth:`process` does. After the writer died, every outstanding
        batch raises DatabaseError (and must be offered again)."""
        if self._pending < 1:
            raise WriterError("no batch submitted")
        self._pending -= 1
        if self._conn is None:
            raise DatabaseError("ingest writer process ended; the batch is lost with it")
        result = self._reply()
        assert isinstance(result, BatchResult)
        return result

    @staticmethod
    def reject_all(batch: Sequence[Inbound], reason: str, detail: str) -> BatchResult:
        """As :meth:`IngestService.reject_all` (no storage involved)."""
        return IngestService.reject_all(batch, reason, detail)

    def close(self) -> None:
        """Ask the writer to exit and wait for it (killed if it does not)."""
        conn, proc = self._conn, self._proc
        self._conn = self._proc = None
        if conn is not None:
            try:
                conn.send(("stop", None))
            except OSError:
                pass
            conn.close()
        if proc is not None:
            proc.join(STOP_TIMEOUT_S)
            if proc.is_alive():
                log.warning("ingest writer %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.join()

    # -- plumbing ----------------------------------------------------------------

    def call(self, op: str, arg: Any) -> Any:
        """One request and its reply; only with no batch submitted."""
        if self._pending:
            raise WriterError(f"{op} with {self._pending} batch(es) outstanding")
        if self._conn is None:
            self._start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send((op, arg))
        except OSError as err:
            code = self._reap()
            raise DatabaseError(f"ingest writer process ended (exit {code})") from err
        return self._reply()

    def _reply(self) -> Any:
        conn = self._conn
        assert conn is not None
        try:
            status, value = conn.recv()
        except (EOFError, OSError) as err:
            code = self._reap()
            raise DatabaseError(
                f"ingest writer process ended (exit {code}); a new one starts on retry"
            ) from err
        if status == "ok":
            return value
        if status == "transient":
            raise DatabaseError(f"in the ingest writer: {value}")
        raise WriterError(f"in the ingest writer: {value}")

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_serve,
            args=(child, self.factory, self.log_level),
            name="mimamori-ingest-writer",
            daemon=True,
        )
        proc.start()
        child.close()  # only the child holds its end: its death is EOF here
        if not parent.poll(START_TIMEOUT_S):
            proc.kill()
            raise CloudError(f"ingest writer did not start within {START_TIMEOUT_S:.0f}s")
        try:
            status, value = parent.recv()
        except EOFError as err:
            proc.join()
            raise CloudError(f"ingest writer exited while starting ({proc.exitcode})") from err
        if status != "ready":
            proc.join()
            raise CloudError(f"ingest writer could not start: {value}")
        self._conn, self._proc = parent, proc
        self.starts += 1
        log.info("ingest writer process %d ready", proc.pid)

    def _reap(self) -> int | None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        # Outstanding batches keep their count: result() raises for each.
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        proc.join(STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        log.error("ingest writer process %d ended with %s", proc.pid, proc.exitcode)
        return int(proc.exitcode) if proc.exitcode is not None else None


def service_from_settings(
    settings: Settings,
    options: ServiceOptions | None = None,
    alarms: bool = True,
    forwarding: bool = True,
) -> IngestService:
    """The production service for ``settings`` (a factory for :class:`RemoteService`:
    wrap it in ``functools.partial``), checked like the worker checks at start.

    Raises ConfigError for a missing hook, CloudError or SQLAlchemyError if
    the database is unreachable or not migrated or the store is not ready.
    The check also leaves a pooled connection open, as a single-process
    worker has: SQLite's WAL index then exists before any disk fills up.
    """
    engine = db.make_engine(settings.database_url, echo=settings.sql_echo)
    db.require_current(engine)
    store = make_store(settings, engine)
    store.prepare()
    hooks = default_hooks(alarms=alarms, forwarding=forwarding)
    return IngestService(db.session_factory(engine), store, hooks, options)


# -- the child -----------------------------------------------------------------


def _serve(
    conn: multiprocessing.connection.Connection, factory: ServiceFactory, log_level: int
) -> None:
    """The writer's main loop: one request at a time until "stop" or EOF."""
    # The receiver handles Ctrl-C (SIGINT reaches the whole process group)
    # and stops us through the pipe after its last batch. SIGTERM keeps its
    # default: whoever sends it to this process (a service manager stopping
    # everything, multiprocessing at exit) means it; a batch cut short is
    # rolled back and was never acknowledged.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s[writer]: %(message)s"
    )
    try:
        service = factory()
    except Exception as err:  # reported to the parent, which exits
        conn.send(("failed", repr(err)))
        return
    conn.send(("ready", os.getpid()))
    receiver = os.getppid()
    while True:
        try:
            op, arg = conn.recv()
        except (EOFError, OSError):
            return  # the receiver is gone: nothing more may be committed for it
        if op == "stop" or os.getppid() != receiver:
            # A dead receiver's last batches stay readable in the pipe: it
            # can acknowledge none of them, so none is worth committing.
            return
        try:
            if op == "process":
                value: Any = service.process([Inbound(t, p, at) for t, p, at in arg])
            elif op == "settle":  # the receiver is idle
                value = service.idle()
            else:
                raise WriterError(f"unknown request {op!r}")
        except TRANSIENT as err:
            reply: tuple[str, Any] = ("transient", f"{type(err).__name__}: {err}")
        except Exception as err:  # the receiver decides: split, retry, reject
            log.exception("ingest writer: %s failed", op)
            reply = ("error", f"{type(err).__name__}: {err}")
        else:
            reply = ("ok", value)
        try:
            conn.send(reply)
        except OSError:
            return
