"""The MQTT side of ingest: receive, batch, hand to the service, acknowledge.

Thin on purpose: every decision about a frame is in
:mod:`cloud.ingest.service`. What this module guarantees:

- **MQTT 5 persistent session** (``clean_start`` false, a session expiry),
  QoS 1, on the shared subscription ``$share/<group>/mm/v1/+/up/#``, so
  several workers split the uplink and frames published while a worker is
  down wait at the broker for it.
- **Acknowledge after durable write**: paho's manual acknowledgement; a
  message's PUBACK goes out only once its batch committed. A crash (even
  SIGKILL) therefore loses nothing: the broker redelivers, the receipts drop
  what had been stored. Receive Maximum bounds the unacknowledged window.
- **Batches**: up to ``batch_size`` messages or ``batch_ms`` after the first,
  one service call each. A failing batch acknowledges nothing. Database or
  store unreachable: the same batch is retried with backoff (the receive
  window fills, the broker holds the rest). Any other exception: the batch
  is split in halves to isolate the message that causes it; a single
  message failing ``max_attempts`` times is rejected as ``internal_error``
  and acknowledged, so a bug never wedges the stream.
- **Pipelined** with a writer process (:mod:`cloud.ingest.writer`): up to
  two batches are handed over, and the older one is acknowledged while the
  writer stores the newer; if the writer fails, every batch still in the
  pipe goes through the retry path above on its own.
- **Deferred** messages (data before its birth) stay unacknowledged and are
  offered again with the next batches until the service decides.
- **Application acks**: after a batch's PUBACKs, one ``ack`` frame per
  terminal (QoS 0) names the frames now decided, so the terminals can
  delete them from their outboxes (:mod:`cloud.ingest.acks`; a failure there
  is counted, never fails the batch).
- **Parked and released frames**: a parked outcome is acknowledged like a
  stored one (the service committed it to the parking store); terminals a
  batch names in ``rebirths`` get the ``rebirth`` command after the acks.
- **Idle**: when no message came for a while, released parked frames are
  applied and the time-series store's lazily refreshed rollups are brought
  up to date (``IngestService.idle``).

Mosquitto keeps a disconnected worker's share of the stream in that worker's
session: restart a worker with the same client id (its session is its
backlog), never retire one with messages queued.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.errors import DatabaseError, TimeseriesError
from cloud.ingest.acks import AckSender
from cloud.ingest.counters import Counters
from cloud.ingest.ota import OtaServer
from cloud.ingest.repush import ConfigRepusher
from cloud.ingest.service import (
    INTERNAL_ERROR,
    BatchProcessor,
    BatchResult,
    Inbound,
    PipelinedProcessor,
)
from protocol.topics import shared_uplink_filter

log = logging.getLogger(__name__)

PIPELINE_DEPTH = 2  # batches handed to a writer process before the oldest is acked
IDLE_S = 0.2  # longest wait for a message before the loop checks stop and stats
DEFERRED_RETRY_S = 0.5  # how often messages waiting for their birth are retried
OTA_REQUEST = "/up/otareq"  # chunk requests of updates (cloud.ingest.ota)

# Errors that say "the storage is not reachable now", not "this batch is bad".
TRANSIENT = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    DatabaseError,
    TimeseriesError,
    ConnectionError,
)


@dataclass(frozen=True)
class WorkerOptions:
    """How to reach the broker and how to batch. Bad values raise ValueError."""

    host: str = "127.0.0.1"
    port: int = 8884  # the service listener (docs/deployment.md)
    username: str = "ingest"
    password: str = field(default="", repr=False)  # options get logged; the secret must not
    client_id: str = "ingest-1"
    group: str = "ingest"
    tls_ca: Path | None = None
    keepalive_s: int = 30
    batch_size: int = 500
    batch_ms: int = 50
    receive_maximum: int = 1000
    session_expiry_s: int = 7 * 86400
    stats_interval_s: float = 60.0
    stats_file: Path | None = None
    max_attempts: int = 3
    retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= self.receive_maximum <= 65535:
            raise ValueError("need 1 <= batch_size <= receive_maximum <= 65535")
        if self.batch_ms < 0 or self.session_expiry_s < 1 or self.max_attempts < 1:
            raise ValueError(f"bad worker options: {self}")
        if not self.client_id:
            raise ValueError("client_id must be set: it names the persistent session")


@dataclass(frozen=True, slots=True)
class _Token:
    """Where a message came from: its connection generation, mid and QoS."""

    generation: int
    mid: int
    qos: int


class IngestWorker:
    """Runs one MQTT client feeding one :class:`IngestService` until stopped."""

    def __init__(
        self,
        service: BatchProcessor,
        options: WorkerOptions,
        counters: Counters | None = None,
        ota: OtaServer | None = None,
        repush: ConfigRepusher | None = None,
    ) -> None:
        self.service = service
        self.ota = ota  # chunk requests of updates go there, never into batches
        self.repush = repush  # pending configs published again after their deadline
        self.options = options
        self.counters = counters or Counters()
        self.stop_event = threading.Event()
        self._queue: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._deferred: list[Inbound] = []
        self._deferred_due = 0.0
        self._next_report = 0.0
        self._generation = 0
        self._subscribed = threading.Event()
        self._in_flight: list[list[Inbound]] = []  # submitted to a pipelined service
        self.client = self._make_client()
        self.acks = AckSender(self.client, self.counters)

    # -- MQTT (paho's network thread) -----------------------------------------

    def _make_client(self) -> mqtt.Client:
        o = self.options
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(o.username, o.password or None)
        if o.tls_ca is not None:
            client.tls_set(ca_certs=str(o.tls_ca))
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self, client: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the connection: %s", rc)
            return
        self._generation += 1
        log.info(
            "connected to %s:%d as %s (session present: %s)",
            self.options.host,
            self.options.port,
            self.options.client_id,
            flags.session_present,
        )
        # Also when the session survived: subscribing again is harmless.
        client.subscribe(shared_uplink_filter(self.options.group), qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any) -> None:
        if any(rc.is_failure for rc in codes):
            log.error("broker refused the subscription: %s", codes)
            return
        self._subscribed.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._subscribed.clear()
        if not self.stop_event.is_set():
            log.warning("disconnected from broker: %s; reconnecting", rc)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's network thread: as little as possible here, it is the
        # receiver's bottleneck (messages are counted as batches are taken).
        if msg.topic.endswith(OTA_REQUEST):
            if self.ota is not None:
                self.ota.submit(msg.topic, bytes(msg.payload))
            return  # QoS 0, nothing to acknowledge
        token = _Token(self._generation, msg.mid, msg.qos)
        self._queue.put(Inbound(msg.topic, bytes(msg.payload), datetime.now(UTC), token))

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (paho retries until the broker answers)."""
        o = self.options
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = o.session_expiry_s
        props.ReceiveMaximum = o.receive_maximum
        self.client.connect_async(
            o.host, o.port, o.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()
        if self.ota is not None:
            self.ota.start(self.client)
        if self.repush is not None:
            self.repush.start(self.client)

    def stop(self) -> None:
        """Ask :meth:`run` to finish the batch in hand and return."""
        self.stop_event.set()

    def run(self) -> None:
        """Process batches until :meth:`stop`; then disconnect cleanly (the
        session and whatever it still holds stay at the broker)."""
        self.start()
        self._next_report = time.monotonic() + self.options.stats_interval_s
        pipelined = isinstance(self.service, PipelinedProcessor)
        try:
            while not self.stop_event.is_set():
                batch = self._collect()
                if pipelined:
                    self._pipeline(batch)
                elif batch:
                    self._handle(batch)
                else:
                    self._settle()
                self._maybe_report()
        finally:
            while self._in_flight:  # decided batches get their PUBACKs
                self._complete_oldest()
            if self.ota is not None:
                self.ota.stop()
            if self.repush is not None:
                self.repush.stop()
            self.client.disconnect()
            self.client.loop_stop()
            self.report()

    @property
    def subscribed(self) -> bool:
        """Connected and the shared subscription granted (a health signal)."""
        return self._subscribed.is_set()

    # -- batching --------------------------------------------------------------

    def _collect(self) -> list[Inbound]:
        """Deferred messages that are due, then new ones: up to ``batch_size``
        new messages or ``batch_ms`` after the first one."""
        o = self.options
        batch: list[Inbound] = []
        if self._deferred and time.monotonic() >= self._deferred_due:
            batch, self._deferred = self._deferred, []
        try:
            # Short idle wait: the loop also has to notice stop and report.
            batch.append(self._queue.get(timeout=o.batch_ms / 1000 if batch else IDLE_S))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + o.batch_ms / 1000
        taken = 1
        while taken < o.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(self._queue.get(timeout=remaining))
                except queue.Empty:
                    break
            taken += 1
        self.counters.count_received(taken)
        return batch

    def _pipeline(self, batch: list[Inbound]) -> None:
        """Keep the writer busy: submit ``batch``, then acknowledge the older
        of two submitted batches while the writer works on the newer one.
        Any failure falls back to :meth:`_handle` (retry, split, reject),
        after the outcomes of every batch still in the pipe were read."""
        service = self.service
        assert isinstance(service, PipelinedProcessor)
        if batch:
            try:
                service.submit(batch)
            except TRANSIENT:
                while self._in_flight:
                    self._complete_oldest()
                self._handle(batch)
                return
            self._in_flight.append(batch)
        if len(self._in_flight) >= PIPELINE_DEPTH or (not batch and self._in_flight):
            self._complete_oldest()
        elif not batch:
            self._settle()

    def _complete_oldest(self) -> None:
        service = self.service
        assert isinstance(service, PipelinedProcessor)
        batch = self._in_flight.pop(0)
        try:
            result = service.result()
        except Exception:
            log.warning("batch of %d failed in the writer; retrying it on its own", len(batch))
            # Read what the pipe still holds (in order) before anything is
            # sent again, then decide each failed batch on its own.
            later = [(b, self._result_or_none(service)) for b in self._in_flight]
            self._in_flight = []
            self._handle(batch)
            for b, res in later:
                if res is None:
                    self._handle(b)
                else:
                    self._finish(b, res)
            return
        self._finish(batch, result)

    @staticmethod
    def _result_or_none(service: PipelinedProcessor) -> BatchResult | None:
        try:
            return service.result()
        except Exception:  # retried by _handle, which logs what it sees
            return None

    def _handle(self, batch: Sequence[Inbound]) -> None:
        """Process ``batch`` until it is decided; split it to find a bad message."""
        delay = 0.5
        tries = 0
        while True:
            try:
                result = self.service.process(batch)
            except TRANSIENT as err:
                self.counters.count_failure()
                log.error(
                    "batch of %d failed, storage unavailable (retry in %.1fs): %s",
                    len(batch),
                    delay,
                    err,
                )
                if self._pause(delay):
                    return  # unacknowledged: the broker redelivers it
                delay = min(delay * 2, self.options.retry_max_s)
                continue
            except Exception as err:
                self.counters.count_failure()
                if len(batch) > 1:
                    log.exception("batch of %d failed; splitting it", len(batch))
                    half = len(batch) // 2
                    self._handle(batch[:half])
                    self._handle(batch[half:])
                    return
                tries += 1
                log.exception("message on %s failed (attempt %d)", batch[0].topic, tries)
                if tries < self.options.max_attempts:
                    if self._pause(delay):
                        return
                    continue
                result = self.service.reject_all(batch, INTERNAL_ERROR, repr(err))
            self._finish(batch, result)
            return

    def _finish(self, batch: Sequence[Inbound], result: BatchResult) -> None:
        """Acknowledge what is decided, keep what is deferred, count."""
        deferred = 0
        for msg, outcome in zip(batch, result.outcomes, strict=True):
            if not outcome.final:
                self._deferred.append(msg)
                deferred += 1
                self._deferred_due = time.monotonic() + DEFERRED_RETRY_S
                continue
            token = msg.token
            # A message from an earlier connection cannot be acked on this one;
            # the broker has redelivered it (a duplicate now) if it still had it.
            if isinstance(token, _Token) and token.generation == self._generation:
                self.client.ack(token.mid, token.qos)
        oldest = min(m.received_at for m in batch)
        self.counters.add_batch(
            stored_frames=result.count("stored"),
            stored_values=result.stored_values,
            duplicates=result.count("duplicate"),
            historical=result.historical,
            deferred=deferred,
            rejects=result.rejects,
            lag_s=(datetime.now(UTC) - oldest).total_seconds(),
            parked=result.count("parked"),
            rebirths=len(result.rebirths),
        )
        # Only now may the terminals delete these frames: they are committed.
        self.acks.send(batch, result.outcomes)
        if result.rebirths:
            self.acks.ask_rebirth(result.rebirths, result.rebirth_ids)

    def _settle(self) -> None:
        """While idle, apply released parked frames and bring the store's lazily
        kept rollups up to date (queries would refresh them anyway; this
        spares the first one the work): ``IngestService.idle``, or the
        store's ``settle``, which a writer process answers with ``idle``."""
        settle = getattr(self.service, "idle", None) or getattr(self.service.store, "settle", None)
        if settle is None:
            return
        try:
            settle()
        except TRANSIENT as err:
            log.warning("idle work failed (a later write or query retries): %s", err)

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry, reporting meanwhile; True if asked to stop."""
        self._maybe_report()
        return self.stop_event.wait(seconds)

    # -- reporting -------------------------------------------------------------

    def _maybe_report(self) -> None:
        if time.monotonic() >= self._next_report:
            self.report()
            self._next_report = time.monotonic() + self.options.stats_interval_s

    def report(self) -> None:
        """Log the counters; write them to the stats file if there is one."""
        log.info("ingest %s", self.counters.log_line())
        path = self.options.stats_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        snapshot = self.counters.snapshot()
        snapshot["client_id"] = self.options.client_id
        snapshot["subscribed"] = self.subscribed
        snapshot["at"] = datetime.now(UTC).isoformat()
        tmp.write_text(json.dumps(snapshot, indent=1))
        os.replace(tmp, path)  # readers never see half a file
