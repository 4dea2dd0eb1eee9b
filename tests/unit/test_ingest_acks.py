"""Which frames the ingest acknowledges to terminals, and how (cloud/ingest/acks.py).

Outcomes come from the real IngestService on a migrated SQLite database;
the ack frames are decoded with the device's decoder, as a terminal would.
The MQTT client is a recorder of ``publish`` calls (the integration tier
sends them through Mosquitto: tests/integration/test_ingest_worker.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cloud import db
from cloud.ingest import acks
from cloud.ingest.counters import Counters
from cloud.ingest.service import (
    DEFERRED,
    DUPLICATE,
    INTERNAL_ERROR,
    REJECTED,
    STORED,
    Inbound,
    IngestService,
)
from cloud.timeseries import SqlStore
from protocol import frames, topics
from protocol.limits import MAX_ACK_RANGES
from tests.support import ingest as S

NOW = S.at(S.T0 + 30)


@pytest.fixture
def service(tmp_path: Any, tmp_path_factory: Any) -> Iterator[IngestService]:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        S.seed(s, ["T1", "T2"])
    yield IngestService(sessions, SqlStore(engine), clock=lambda: NOW)
    engine.dispose()


class Info:
    def __init__(self, rc: int) -> None:
        self.rc = rc


class Recorder:
    """paho's ``publish`` as far as AckSender uses it; ``rc`` is what it returns."""

    def __init__(self, rc: int = 0) -> None:
        self.rc = rc
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> Info:
        self.sent.append((topic, payload, qos))
        return Info(self.rc)


def msgs(*items: dict[str, Any] | Inbound) -> list[Inbound]:
    return [m if isinstance(m, Inbound) else Inbound.of_frame(m, NOW) for m in items]


def acked(recorder: Recorder) -> dict[tuple[str, int], list[list[int]]]:
    """What the recorded ack frames tell each (terminal, boot), checked as a terminal would."""
    out: dict[tuple[str, int], list[list[int]]] = {}
    for topic, payload, qos in recorder.sent:
        assert qos == topics.ACK_QOS == 0
        frame = frames.decode(payload)
        topics.check_frame_topic(topic, frame)
        out.setdefault((frame["tid"], frame["for_boot"]), []).extend(frame["ranges"])
    return out


def test_stored_duplicate_and_rejected_frames_are_acked_per_terminal(
    service: IngestService,
) -> None:
    batch = msgs(
        S.birth("T1", 3, 0),
        S.data("T1", 3, 1, S.T0, [[1] * 6]),
        S.data("T1", 3, 2, S.T0 + 60, [[1] * 7]),  # unknown alias: rejected, permanently
        S.birth("T2", 1, 5),
    )
    first = service.process(batch)
    assert [o.status for o in first.outcomes] == [STORED, STORED, REJECTED, STORED]
    assert [o.key for o in first.outcomes] == [
        ("T1", 3, 0),
        ("T1", 3, 1),
        ("T1", 3, 2),
        ("T2", 1, 5),
    ]
    resend = msgs(S.data("T1", 3, 1, S.T0, [[1] * 6]))
    again = service.process(resend)
    assert [o.status for o in again.outcomes] == [DUPLICATE]
    rec = Recorder()
    counters = Counters()
    sender = acks.AckSender(rec, counters, clock=lambda: S.T0 + 31)
    assert sender.send(batch, first.outcomes) == 2
    assert sender.send(resend, again.outcomes) == 1  # acked again, or resent for ever
    assert acked(rec) == {("T1", 3): [[0, 3], [1, 1]], ("T2", 1): [[5, 1]]}
    assert [t for t, _p, _q in rec.sent] == [
        topics.downlink("T1", "ack"),
        topics.downlink("T2", "ack"),
        topics.downlink("T1", "ack"),
    ]
    head = frames.decode(rec.sent[0][1])
    assert (head["boot"], head["seq"], head["ts"], head["unsynced"]) == (0, 0, S.T0 + 31, False)
    snap = counters.snapshot()
    assert (snap["acks_sent"], snap["acked_frames"], snap["ack_failures"]) == (3, 5, 0)


def test_deferred_and_death_frames_are_not_acked(service: IngestService) -> None:
    batch = msgs(S.data("T1", 4, 1, S.T0, [[1] * 6]), S.death("T1", 4, 7))
    result = service.process(batch)
    assert [o.status for o in result.outcomes] == [DEFERRED, STORED]
    assert acks.plan(batch, result.outcomes) == {}


def test_undecodable_body_is_acked_when_its_head_names_the_topic_terminal(
    service: IngestService,
) -> None:
    good = frames.encode(S.data("T1", 3, 9, S.T0, [[1] * 6]))
    broken = bytes([good[0] + 1]) + good[1:] + b"\x00"  # one element too many
    other = frames.encode(S.data("T2", 3, 10, S.T0, [[1] * 6]))
    batch = [
        Inbound(topics.uplink("T1", "data"), broken, NOW),
        Inbound(topics.uplink("T1", "data"), b"\xff", NOW),  # no head at all
        Inbound(topics.uplink("T1", "data"), other, NOW),  # speaks for T2: never acked
    ]
    result = service.process(batch)
    assert [o.status for o in result.outcomes] == [REJECTED] * 3
    assert [o.key for o in result.outcomes] == [None, None, None]  # none passed decoding
    assert acks.plan(batch, result.outcomes) == {("T1", 3): {9}}
    # a batch the worker gave up on (internal_error) carries no keys at all
    given_up = service.reject_all(batch[:1], INTERNAL_ERROR, "boom")
    assert acks.plan(batch[:1], given_up.outcomes) == {("T1", 3): {9}}


def test_many_ranges_split_into_several_frames() -> None:
    seqs = set(range(0, 2 * (MAX_ACK_RANGES + 5), 2))  # every other seq: one range each
    out = acks.ack_frames({("T1", 2): seqs}, S.T0)
    decoded = [frames.decode(p) for _t, p in out]
    assert [len(f["ranges"]) for f in decoded] == [MAX_ACK_RANGES, 5]
    assert {r[0] for f in decoded for r in f["ranges"]} == seqs


def test_a_failing_publish_is_counted_and_never_raises(service: IngestService) -> None:
    batch = msgs(S.birth("T1", 3, 0))
    result = service.process(batch)
    counters = Counters()
    assert acks.AckSender(Recorder(rc=4), counters).send(batch, result.outcomes) == 0  # no conn

    class Broken:
        def publish(self, *_a: Any, **_k: Any) -> Any:
            raise RuntimeError("client gone")

    assert acks.AckSender(Broken(), counters).send(batch, result.outcomes) == 0
    snap = counters.snapshot()
    assert (snap["acks_sent"], snap["acked_frames"], snap["ack_failures"]) == (0, 0, 2)
    assert "ack_failures=2" in counters.log_line()


def test_rebirth_commands_carry_their_rows_id_or_zero_without_a_row() -> None:
    recorder = Recorder()
    sender = acks.AckSender(recorder, Counters(), clock=lambda: 1_700_000_000)
    assert sender.ask_rebirth(["T1", "T2"], {"T1": 42}) == 2
    sent = [(topic, frames.decode(payload), qos) for topic, payload, qos in recorder.sent]
    assert [(t, f["name"], f["id"], f["seq"], q) for t, f, q in sent] == [
        ("mm/v1/T1/down/cmd", "rebirth", 42, 42, 1),
        ("mm/v1/T2/down/cmd", "rebirth", acks.REBIRTH_ID, 0, 1),
    ]
