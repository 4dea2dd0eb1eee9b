"""Over-the-air updates in the ingest worker: chunks for terminals, rollout waves.

The worker hands every ``otareq`` (QoS 0, never stored, never acked) to
:class:`OtaServer` instead of its batches. The server's own thread answers
each with a ``chunk`` frame on the terminal's ``down/chunk`` (QoS 0) from
:func:`cloud.services.ota.chunk_frame`, which serves only jobs offered to
that terminal (a request for a job that was cancelled or ended gets the
``ota_cancel`` command instead: :func:`cloud.services.ota.withdrawal`),
and every ``advance_s`` runs :func:`cloud.services.ota.advance`
(offers, stalls, waves, automatic pauses), publishing through the worker's
own MQTT connection.

Production runs several workers; chunk requests reach one of them (shared
subscription), but every worker has a driver. Only the holder of the
``ota-driver`` lease (:class:`cloud.ops.lease.Lease`, taken or renewed at the
start of each pass) drives, so an offer is not sent twice nor an automatic
pause audited twice; the others pass in standby. A worker that dies stops
renewing and another takes over once the lease expires; one that stops
cleanly hands it back at once. The service's conditional transitions are the
second fence, for a holder paused past its lease.

Nothing here may stop the worker: failures are logged and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud.ops.lease import Lease
from cloud.services import ota
from cloud.services.errors import PublishError
from protocol import frames, topics
from protocol.errors import ProtocolError

log = logging.getLogger(__name__)

LEASE = "ota-driver"  # name of the driver's lease (scheduler_leases.name)
REQUEST_QUEUE = 2000  # requests waiting; more are dropped (terminals ask again)
WITHDRAW_S = 30.0  # a terminal asking for a withdrawn job is told again after this
PUBLISH_TIMEOUT_S = 10.0


class ClientPublisher:
    """:class:`cloud.services.publisher.Publisher` over a connected paho client."""

    def __init__(self, client: Any, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self.client = client
        self.timeout_s = timeout_s

    def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != 0:
            raise PublishError(f"not connected (rc {info.rc})")
        if qos:
            try:
                info.wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError) as err:
                raise PublishError(str(err)) from err
            if not info.is_published():
                raise PublishError("no PUBACK within %.0f s" % self.timeout_s)


class OtaServer:
    """Chunk server and rollout driver; :meth:`start` once the client exists.

    ``lease``: drive rollouts only while holding it (see the module's
    docstring); None drives on every pass (a single worker, tests).
    """

    def __init__(
        self,
        sessions: Callable[[], Session],
        advance_s: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: Lease | None = None,
    ) -> None:
        self.sessions = sessions
        self.advance_s = advance_s
        self.clock = clock
        self.lease = lease
        self.driving = False  # held the lease at the last pass
        self.client: Any = None
        self.chunks = 0
        self.refused = 0
        self.dropped = 0
        self.withdrawn = 0  # ota_cancel commands sent to terminals asking for ended jobs
        self._withdrawn: dict[int, float] = {}  # job -> monotonic time it was last withdrawn
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(REQUEST_QUEUE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, topic: str, payload: bytes) -> None:
        """From paho's network thread: queue one request (never blocks)."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            self.dropped += 1

    def start(self, client: Any) -> None:
        self.client = client
        self._thread = threading.Thread(target=self._run, name="ota", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after its current pass; hand the lease back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.lease is not None and self.driving:
            try:
                self.lease.release()
            except sa.exc.SQLAlchemyError:  # it expires by itself
                log.exception("ota: releasing the driver lease failed")

    def _run(self) -> None:
        next_advance = time.monotonic()
        while not self._stop.is_set():
            wait = max(0.0, next_advance - time.monotonic())
            try:
                topic, payload = self._queue.get(timeout=min(wait, 0.5))
            except queue.Empty:
                pass
            else:
                self._answer(topic, payload)
                continue
            if time.monotonic() >= next_advance:
                next_advance = time.monotonic() + self.advance_s
                self.advance()

    def advance(self) -> int:
        """One pass of the rollout driver; the number of targets it changed
        (0 in standby, while another worker holds the lease)."""
        if not self._lead():
            return 0
        try:
            with self.sessions() as session:
                return ota.advance(session, ClientPublisher(self.client), self.clock())
        except Exception:
            log.exception("ota: advancing rollouts failed")
            return 0

    def _lead(self) -> bool:
        """Take or renew the lease; True if this worker drives this pass."""
        if self.lease is None:
            return True
        try:
            held = self.lease.acquire()
        except sa.exc.SQLAlchemyError:
            log.exception("ota: the driver lease could not be taken or renewed")
            held = False
        if held != self.driving:
            log.info("ota: %s rollouts", "driving" if held else "standby, another worker drives")
            self.driving = held
        return held

    def _answer(self, topic: str, payload: bytes) -> None:
        try:
            request = frames.decode(payload)
            tid = topics.check_frame_topic(topic, request)[0]
        except ProtocolError as err:
            self.refused += 1
            log.warning("ota: bad request on %s: %s", topic, err)
            return
        try:
            with self.sessions() as session:
                chunk = ota.chunk_frame(session, tid, request, self.clock())
        except Exception:
            log.exception("ota: answering %s failed", topic)
            return
        if chunk is None:
            self.refused += 1
            self._withdraw(tid, request)
            return
        info = self.client.publish(topics.downlink(tid, "chunk"), chunk, qos=0)
        if info.rc == 0:
            self.chunks += 1

    def _withdraw(self, tid: str, request: dict[str, Any]) -> None:
        """Tell a terminal asking for a cancelled or ended job to stop, at most
        once per WITHDRAW_S per job (it repeats its request every few seconds)."""
        job = request["job"]
        now = time.monotonic()
        if now - self._withdrawn.get(job, -WITHDRAW_S) < WITHDRAW_S:
            return
        self._withdrawn[job] = now
        if len(self._withdrawn) > REQUEST_QUEUE:  # bounded: forget the oldest half
            for old in sorted(self._withdrawn, key=self._withdrawn.__getitem__)[
                : REQUEST_QUEUE // 2
            ]:
                del self._withdrawn[old]
        try:
            with self.sessions() as session:
                sent = ota.withdrawal(session, tid, job, ClientPublisher(self.client), self.clock())
        except Exception:
            log.exception("ota: withdrawing job %s from %s failed", job, tid)
            return
        if sent is not None:
            self.withdrawn += 1
            log.info("ota: job %s withdrawn from %s (command %d)", job, tid, sent.id)
