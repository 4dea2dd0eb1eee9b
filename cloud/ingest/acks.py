"""Application acknowledgements: tell each terminal which of its frames are decided.

A terminal keeps every queued frame in its flash outbox until an ``ack``
frame on ``mm/v1/<tid>/down/ack`` names it (``protocol/README.md``, ack).
The broker's PUBACK alone is not enough: Mosquitto acknowledges a frame
before it has written it to disk or delivered it, so a broker crash loses
what it had acknowledged (``tests/faults/test_kills.py``). The ingest worker
sends the acks after a batch committed and its PUBACKs went out
(:meth:`AckSender.send`, called by :mod:`cloud.ingest.worker`).

What is acknowledged: every message of the batch whose outcome is final.

- ``stored``: the point of it.
- ``duplicate``: a resend of a frame stored before (its ack was lost, or it
  came back after a reconnect) must be acked again, or the terminal would
  resend it for ever.
- ``parked``: kept in the parking store (``cloud.services.parking``:
  outside the contract, or its birth not known yet), committed like a
  stored frame; the cloud applies it once released.
- ``rejected``: only frames that can never be valid (malformed, another
  terminal's, unknown terminal, data of a refused birth). Resending would
  bring the same verdict; worse, unacknowledged frames hold the terminal's
  send window, so a few frames the cloud refuses would stall everything the
  terminal queued after them. A frame whose body does not decode is acked
  when its head (tid, boot, seq) reads (``protocol.frames.head``) and
  names the terminal of its topic; garbage without a readable head cannot
  be acked.

Not acknowledged: ``deferred`` outcomes (offered again, acked once
decided), death frames (the broker publishes them, never an outbox), and
everything of a batch that failed (nothing was stored; the broker
redelivers). Storage trouble never produces an outcome, so it never
produces an ack.

One ack frame per (terminal, boot) of the batch, split when a boot needs
more than ``MAX_ACK_RANGES`` seq ranges (shared subscriptions interleave a
terminal's frames across workers). Sent at QoS 0: a lost ack costs one
resend, which the receipts turn into a duplicate and a new ack, while QoS 1
would make the worker track thousands of in-flight downlink messages for
terminals that may be gone. A failure to publish never fails the batch: it
is counted (``ack_failures``) and the terminal resends.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cloud.ingest.counters import Counters
from cloud.ingest.service import Inbound, Outcome
from cloud.services import commands
from protocol import frames, topics
from protocol.errors import ProtocolError
from protocol.limits import MAX_ACK_RANGES

log = logging.getLogger(__name__)

ACK_SEQ = 0  # the ack's own seq: acks need no identity, applying one twice changes nothing
# The id of a rebirth command the ingest sends without a row (the terminal
# is not in the database); otherwise the command has its terminal_commands
# row (cloud.services.commands.record_system_command) and that row's id.
REBIRTH_ID = commands.INGEST_REBIRTH_ID


def plan(batch: Sequence[Inbound], outcomes: Sequence[Outcome]) -> dict[tuple[str, int], set[int]]:
    """``(terminal, boot) -> seqs`` to acknowledge for one decided batch
    (outcomes in the batch's order, as :class:`~cloud.ingest.service.BatchResult` has them)."""
    todo: dict[tuple[str, int], set[int]] = defaultdict(set)
    for msg, outcome in zip(batch, outcomes, strict=True):
        if not outcome.final:
            continue
        key = outcome.key if outcome.key is not None else _head_key(msg)
        if key is None or msg.topic.endswith("/up/death"):
            continue
        todo[(key[0], key[1])].add(key[2])
    return todo


def ack_frames(todo: dict[tuple[str, int], set[int]], ts: int) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of the ack frames for :func:`plan`'s result, in
    terminal and boot order; each names at most ``MAX_ACK_RANGES`` ranges."""
    out = []
    for (tid, boot), seqs in sorted(todo.items()):
        ranges = frames.ack_ranges(seqs)
        topic = topics.downlink(tid, "ack")
        for i in range(0, len(ranges), MAX_ACK_RANGES):
            frame = {
                "type": "ack",
                "tid": tid,
                "boot": 0,
                "seq": ACK_SEQ,
                "ts": ts,
                "unsynced": False,
                "for_boot": boot,
                "ranges": ranges[i : i + MAX_ACK_RANGES],
            }
            out.append((topic, frames.encode(frame)))
    return out


class AckSender:
    """Publishes the acks of decided batches through an MQTT client.

    ``client`` needs paho's ``publish(topic, payload, qos=...)`` returning
    an object with ``rc`` (0: queued for sending); ``clock`` gives Unix
    seconds for the frames' ``ts``. :meth:`send` never raises.
    """

    def __init__(
        self,
        client: Any,
        counters: Counters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.counters = counters
        self.clock = clock

    def ask_rebirth(
        self, terminal_ids: Sequence[str], command_ids: Mapping[str, int] | None = None
    ) -> int:
        """Send each terminal the ``rebirth`` command (QoS 1; the id of its
        row in ``command_ids``, else ``REBIRTH_ID``): data of theirs waits,
        parked, for a birth. Returns the commands queued; never raises (the
        next parked frame of that boot after the service's wait asks again)."""
        sent = 0
        ids = command_ids or {}
        try:
            ts = int(self.clock())
            for tid in terminal_ids:
                frame = rebirth_frame(tid, ts, ids.get(tid, REBIRTH_ID))
                info = self.client.publish(topics.downlink(tid, "cmd"), frame, qos=1)
                if getattr(info, "rc", 0) == 0:
                    sent += 1
                else:
                    log.warning("rebirth command to %s not sent (rc %s)", tid, info.rc)
        except Exception:
            log.exception("sending rebirth commands failed")
        return sent

    def send(self, batch: Sequence[Inbound], outcomes: Sequence[Outcome]) -> int:
        """Acknowledge the final outcomes of ``batch``; return the ack frames sent."""
        sent = failed = covered = 0
        try:
            ts = int(self.clock())
            for key, seqs in sorted(plan(batch, outcomes).items()):
                ok = True
                for topic, payload in ack_frames({key: seqs}, ts):
                    info = self.client.publish(topic, payload, qos=topics.ACK_QOS)
                    if getattr(info, "rc", 0) == 0:
                        sent += 1
                    else:  # not connected: the terminal resends, a later batch acks
                        failed += 1
                        ok = False
                if ok:
                    covered += len(seqs)
        except Exception:  # an ack must never fail a batch that is already committed
            log.exception("sending acks for a batch of %d failed", len(batch))
            failed += 1
        self.counters.count_acks(sent=sent, frames=covered, failures=failed)
        return sent


def rebirth_frame(tid: str, ts: int, command_id: int = REBIRTH_ID) -> bytes:
    """The ``rebirth`` command frame the ingest sends on its own (protocol/README.md,
    cmd): boot 0, seq = id, as the cloud's frames are."""
    return frames.encode(
        {
            "type": "cmd",
            "tid": tid,
            "boot": 0,
            "seq": command_id,
            "ts": ts,
            "unsynced": False,
            "id": command_id,
            "name": "rebirth",
            "args": {},
        }
    )


def _head_key(msg: Inbound) -> tuple[str, int, int] | None:
    """The key of a refused payload whose head still reads and names its topic's terminal."""
    try:
        tid, direction, _kind = topics.parse(msg.topic)
        _ftype, frame_tid, boot, seq = frames.head(bytes(msg.payload))
    except ProtocolError:
        return None
    if direction != topics.UP or frame_tid != tid:
        return None  # never ack on behalf of another terminal
    return tid, boot, seq
