"""In-process ingest counters: a plain object that is easy to log and export.

One :class:`Counters` per worker process. The worker feeds it every batch
result; :meth:`Counters.snapshot` returns plain data (ints, floats, strings,
dicts and lists) for the periodic log line, the JSON stats file and, later,
a Prometheus exporter. Counters only ever grow (except the lag gauges), so
an exporter can publish them as counters.

Poison frames are also kept in a bounded list of recent rejects (topic,
reason, message, time) for an operator to look at; the full history is in
the log. Thread-safe: the MQTT thread counts ``received``, the batch thread
everything else.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

RECENT_REJECTS = 100


@dataclass(frozen=True)
class Reject:
    """One refused message, as an operator sees it."""

    at: datetime
    topic: str
    reason: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "at": self.at.isoformat(),
            "topic": self.topic,
            "reason": self.reason,
            "detail": self.detail,
        }


class Counters:
    """Running totals of one ingest worker.

    Fields (all since the process started): ``received`` messages taken from
    MQTT, ``stored_frames`` frames whose effects were committed,
    ``stored_values`` samples written to the time-series store,
    ``duplicates`` frames dropped by the (terminal, boot, seq) key,
    ``historical`` frames marked late, ``deferred`` times a data frame waited
    for the birth of its boot, ``parked`` frames kept for later
    (:mod:`cloud.services.parking`; acknowledged), ``rebirths`` requested
    from terminals whose birth was missing, ``rejected`` per reason, ``batches`` and
    ``batch_failures``, ``acks_sent`` (ack frames published to terminals),
    ``acked_frames`` (uplink frames they named), ``ack_failures`` (ack frames
    not sent: the terminal resends, a later batch acks),
    ``config_repushes`` (pending configs published again after their ack
    deadline, :mod:`cloud.ingest.repush`) and ``config_repush_failures``
    (passes a publish error ended), and gauges
    ``lag_s`` (receipt to commit of the oldest message of the last batch)
    and ``max_lag_s``.
    """

    def __init__(self, recent: int = RECENT_REJECTS) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.stored_frames = 0
        self.stored_values = 0
        self.duplicates = 0
        self.historical = 0
        self.deferred = 0
        self.parked = 0
        self.rebirths = 0
        self.batches = 0
        self.batch_failures = 0
        self.acks_sent = 0
        self.acked_frames = 0
        self.ack_failures = 0
        self.config_repushes = 0
        self.config_repush_failures = 0
        self.rejected: Counter[str] = Counter()
        self.lag_s = 0.0
        self.max_lag_s = 0.0
        self.recent_rejects: deque[Reject] = deque(maxlen=recent)

    def count_received(self, n: int = 1) -> None:
        with self._lock:
            self.received += n

    def count_failure(self) -> None:
        with self._lock:
            self.batch_failures += 1

    def count_acks(self, *, sent: int, frames: int, failures: int) -> None:
        """Account for the acks of one batch (:mod:`cloud.ingest.acks`)."""
        with self._lock:
            self.acks_sent += sent
            self.acked_frames += frames
            self.ack_failures += failures

    def count_repushes(self, *, repushed: int, failed: bool) -> None:
        """Account for one pass of the config re-push (:mod:`cloud.ingest.repush`)."""
        with self._lock:
            self.config_repushes += repushed
            self.config_repush_failures += int(failed)

    def add_batch(
        self,
        *,
        stored_frames: int,
        stored_values: int,
        duplicates: int,
        historical: int,
        deferred: int,
        rejects: list[Reject],
        lag_s: float,
        parked: int = 0,
        rebirths: int = 0,
    ) -> None:
        """Account for one committed batch."""
        with self._lock:
            self.batches += 1
            self.stored_frames += stored_frames
            self.stored_values += stored_values
            self.duplicates += duplicates
            self.historical += historical
            self.deferred += deferred
            self.parked += parked
            self.rebirths += rebirths
            for r in rejects:
                self.rejected[r.reason] += 1
                self.recent_rejects.append(r)
            self.lag_s = lag_s
            self.max_lag_s = max(self.max_lag_s, lag_s)

    @property
    def rejected_total(self) -> int:
        with self._lock:
            return sum(self.rejected.values())

    @property
    def decided(self) -> int:
        """Frames stored, dropped as duplicates, parked or rejected: those
        acknowledged (a cheap progress figure; :meth:`snapshot` has them all)."""
        with self._lock:
            return self.stored_frames + self.duplicates + self.parked + sum(self.rejected.values())

    def snapshot(self) -> dict[str, Any]:
        """Plain-data copy of every counter (JSON-serialisable)."""
        with self._lock:
            return {
                "received": self.received,
                "stored_frames": self.stored_frames,
                "stored_values": self.stored_values,
                "duplicates": self.duplicates,
                "historical": self.historical,
                "deferred": self.deferred,
                "parked": self.parked,
                "rebirths": self.rebirths,
                "rejected": dict(sorted(self.rejected.items())),
                "rejected_total": sum(self.rejected.values()),
                "batches": self.batches,
                "batch_failures": self.batch_failures,
                "acks_sent": self.acks_sent,
                "acked_frames": self.acked_frames,
                "ack_failures": self.ack_failures,
                "config_repushes": self.config_repushes,
                "config_repush_failures": self.config_repush_failures,
                "lag_s": round(self.lag_s, 3),
                "max_lag_s": round(self.max_lag_s, 3),
                "recent_rejects": [r.as_dict() for r in self.recent_rejects],
            }

    def log_line(self) -> str:
        """One line for the periodic log (rejects summarised by reason)."""
        s = self.snapshot()
        rejected = ",".join(f"{k}={v}" for k, v in s["rejected"].items()) or "0"
        return (
            f"received={s['received']} stored_frames={s['stored_frames']} "
            f"stored_values={s['stored_values']} duplicates={s['duplicates']} "
            f"historical={s['historical']} deferred={s['deferred']} parked={s['parked']} "
            f"rebirths={s['rebirths']} rejected={rejected} "
            f"batches={s['batches']} failures={s['batch_failures']} "
            f"acks={s['acks_sent']} acked_frames={s['acked_frames']} "
            f"ack_failures={s['ack_failures']} "
            f"config_repushes={s['config_repushes']} "
            f"lag_s={s['lag_s']} max_lag_s={s['max_lag_s']}"
        )
