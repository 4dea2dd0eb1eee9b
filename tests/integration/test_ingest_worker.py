"""The ingest worker as a process (``python -m cloud.ingest``) on a real Mosquitto.

Twenty terminals publish with their own credentials (paho, MQTT 5, QoS 1)
on the terminal listener; workers read the shared subscription on the
service listener and write SQLite (or InfluxDB). Nothing is mocked: the
tests count what reached the database against what the terminals sent.

The broker runs with unlimited per-client queues: the shipped
``max_queued_messages 1000`` would make Mosquitto drop the stream published
while the killed worker is away (see the ingest notes in the report), and
these tests are about the worker, not that limit.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import FrameReceipt, IngestCounter, ParkedFrame
from cloud.timeseries import InfluxStore, SqlStore, TimeSeriesStore
from cloud.timeseries.influx_wire import InfluxClient
from protocol import frames, topics
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.influx import session_server as influx_server

pytestmark = pytest.mark.integration

TIDS = [f"T{i:02d}" for i in range(20)]
STRANGER = "T99"  # has broker credentials, is not registered in the cloud
INGEST_PASSWORD = S.INGEST_PASSWORD
ACCOUNTS = [
    account_from_row("ingest", INGEST_PASSWORD, "ingest"),
    *(account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in [*TIDS, STRANGER]),
]
START_S = 30.0
DONE_S = 120.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    workdir = tmp_path_factory.mktemp("ingest-broker")
    with MosquittoBroker(workdir, ACCOUNTS, max_queued_messages=0, max_queued_bytes=0) as b:
        yield b


@pytest.fixture
def db_url(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    with db.session_factory(engine)() as s:
        S.seed(s, TIDS)
    engine.dispose()
    yield url


@pytest.fixture
def workers(
    broker: MosquittoBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Any]:
    started: list[S.IngestProcess] = []
    group = f"g{abs(hash(request.node.nodeid)) % 10**8}"

    def make(client_id: str, env: dict[str, str]) -> S.IngestProcess:
        w = S.IngestProcess(broker, tmp_path, f"{client_id}-{group}", group, env)
        started.append(w)
        return w

    yield make
    for w in started:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)
        w.forget_session()


def fleet() -> list[S.Terminal]:
    return [S.Terminal(t, boot=2, start=S.T0 + i) for i, t in enumerate(TIDS)]


def stream(terminals: list[S.Terminal], n_frames: int) -> list[list[dict[str, Any]]]:
    """Per terminal: its birth, then ``n_frames`` data frames."""
    return [[t.birth(), *(t.data() for _ in range(n_frames))] for t in terminals]


def publish(
    broker: MosquittoBroker, per_terminal: list[list[dict[str, Any]]], rate: float | None = None
) -> None:
    """Publish round-robin over the terminals (each its own connection); at
    ``rate`` frames/s if given; return once the broker acknowledged all."""
    pubs = [S.Publisher(HOST, broker.ports["terminal"], fs[0]["tid"]) for fs in per_terminal]
    try:
        t0 = time.monotonic()
        sent = 0
        for k in range(max(len(fs) for fs in per_terminal)):
            for pub, fs in zip(pubs, per_terminal, strict=True):
                if k < len(fs):
                    pub.publish_frame(fs[k])
                    sent += 1
            if rate is not None:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the producer, not synchronisation
        for pub in pubs:
            pub.flush(DONE_S)
    finally:
        for pub in pubs:
            pub.close()


def parked_now(url: str) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(ParkedFrame)) or 0)
    finally:
        engine.dispose()


def receipts(url: str) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) or 0)
    finally:
        engine.dispose()


def counter_sums(url: str) -> dict[str, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            t = IngestCounter.__table__
            row = conn.execute(
                sa.select(
                    *(sa.func.sum(t.c[n]) for n in ("frames", "samples", "duplicates", "rejected"))
                )
            ).one()
    finally:
        engine.dispose()
    return dict(
        zip(
            ("frames", "samples", "duplicates", "rejected"), (int(v or 0) for v in row), strict=True
        )
    )


def sensor_values(store: TimeSeriesStore) -> dict[tuple[str, str, int], float]:
    return {p.key: p.value for p in store.iter_points() if not p.channel.startswith("$")}


def assert_stored_exactly_once(
    url: str, store: TimeSeriesStore, terminals: list[S.Terminal], n_frames: int
) -> None:
    total = len(terminals) * (1 + n_frames)
    assert receipts(url) == total
    sums = counter_sums(url)
    assert sums["frames"] == total, sums  # counted once per frame: processed once
    assert sums["samples"] == len(terminals) * n_frames * len(S.CHANNELS)
    assert sensor_values(store) == S.expected_values(terminals)


def sql_store(url: str) -> SqlStore:
    return SqlStore(db.make_engine(url))


def test_fleet_stored_exactly_once_and_poison_counted(
    broker: MosquittoBroker, db_url: str, workers: Any
) -> None:
    worker = workers("w", {"MIMAMORI_DATABASE_URL": db_url}).start()
    terminals = fleet()
    per_terminal = stream(terminals, 30)
    t01_birth = per_terminal[1][0]
    poison = [
        ("T00", topics.uplink("T00", "data"), b"\xff"),  # a stray CBOR break
        ("T01", topics.uplink("T01", "status"), frames.encode(t01_birth)),  # wrong kind
        ("T02", topics.uplink("T02", "data"), b"\x00" * 5000),  # above the frame limit
        (
            "T03",
            topics.uplink("T03", "data"),  # seven values, six channels
            frames.encode(S.data("T03", 2, 9999, S.T0, [[1] * 7])),
        ),
        (STRANGER, topics.uplink(STRANGER, "birth"), frames.encode(S.birth(STRANGER, 1, 0))),
    ]
    publish(broker, per_terminal)
    pubs = {tid: S.Publisher(HOST, broker.ports["terminal"], tid) for tid, _t, _p in poison}
    try:
        for tid, topic, payload in poison:
            pubs[tid].publish(topic, payload)
        pubs["T00"].publish_frame(per_terminal[0][1])  # a QoS 1 resend of a stored frame
        for p in pubs.values():
            p.flush()
    finally:
        for p in pubs.values():
            p.close()
    total = 20 * 31 + len(poison) + 1
    S.wait_for(
        lambda: (
            worker.alive()
            and (worker.stats() or {}).get("received", 0) >= total
            and worker.stats()["stored_frames"]
            + worker.stats()["duplicates"]
            + worker.stats()["rejected_total"]
            >= total
        ),
        DONE_S,
        "the stream to be stored",
    )
    stats = worker.stats()
    assert stats is not None
    assert stats["rejected"] == {
        "bad_topic": 1,
        "too_large": 1,
        "unknown_alias": 1,
        "unknown_terminal": 1,
        "unsupported_cbor": 1,
    }
    assert [r["reason"] for r in stats["recent_rejects"]] and all(
        r["topic"].startswith("mm/v1/") for r in stats["recent_rejects"]
    )
    assert stats["duplicates"] == 1
    assert stats["stored_frames"] == 20 * 31
    assert stats["stored_values"] == 20 * 30 * 6  # births carry no samples
    worker.stop()
    assert_stored_exactly_once(db_url, sql_store(db_url), terminals, 30)
    assert counter_sums(db_url)["rejected"] == 4  # the registered terminals' poison


def test_terminals_get_acks_for_stored_resent_and_refused_frames(
    broker: MosquittoBroker, db_url: str, workers: Any
) -> None:
    """After each committed batch the worker tells every terminal what it now
    has (protocol ack frames on down/ack): stored frames, a resend of a stored
    frame (acked again, or the terminal would resend it for ever) and a frame
    refused for good. Deaths (never queued by a terminal) are not acked."""
    worker = workers("w", {"MIMAMORI_DATABASE_URL": db_url}).start()
    t = S.Terminal("T05", boot=4)
    sent = [t.birth(), *(t.data() for _ in range(5))]
    bad = S.data("T05", 4, t._next_seq(), S.T0, [[1] * 7])  # seven values, six channels
    death = t.death()
    pub = S.Publisher(HOST, broker.ports["terminal"], "T05", listen_acks=True)
    try:
        for f in [*sent, bad, death]:
            pub.publish_frame(f)
        pub.flush()
        want = {(4, f["seq"]) for f in [*sent, bad]}
        S.wait_for(lambda: worker.alive() and pub.acked >= want, DONE_S, f"acks for {want}")
        before = len(pub.ack_frames)
        pub.publish_frame(sent[2])  # its ack was lost, say: the terminal resends
        pub.flush()
        S.wait_for(lambda: len(pub.ack_frames) > before, DONE_S, "the resend's ack")
        stats = S.wait_for(
            lambda: (s := worker.stats()) and s["acks_sent"] == len(pub.ack_frames) and s,
            DONE_S,
            "the stats file to show the acks",
        )
    finally:
        pub.close()
    worker.stop()
    assert pub.ack_frames[-1]["ranges"] == [[sent[2]["seq"], 1]]
    assert pub.acked == want, "the death (never queued) is not acked"
    assert (stats["duplicates"], stats["rejected"]) == (1, {"unknown_alias": 1})
    assert stats["acked_frames"] == len(want) + 1 and stats["ack_failures"] == 0


def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    broker: MosquittoBroker, db_url: str, workers: Any
) -> None:
    """The acceptance test: kill -9 the worker mid-stream, restart it, count."""
    n_frames = 200
    terminals = fleet()
    per_terminal = stream(terminals, n_frames)
    total = len(terminals) * (1 + n_frames)
    worker = workers("w", {"MIMAMORI_DATABASE_URL": db_url}).start()
    producer = threading.Thread(target=publish, args=(broker, per_terminal, 800.0))
    producer.start()
    try:
        S.wait_for(
            lambda: worker.alive() and (worker.stats() or {}).get("stored_frames", 0) >= total // 4,
            DONE_S,
            "a quarter of the stream to be stored",
        )
        worker.kill()
        # The producer keeps publishing while no worker runs: the session
        # queues it. The writer may still commit the batch it had in hand
        # (never acknowledged: redelivered, then dropped as a duplicate);
        # after that nothing moves.
        stored_before = S.wait_for(
            lambda: (count := receipts(db_url)) == (time.sleep(0.5) or receipts(db_url)) and count,
            10,
            "nothing to move while dead",
        )
        assert 0 < stored_before < total, "the kill did not land mid-stream"
        worker.start()
    finally:
        producer.join(DONE_S)
    assert not producer.is_alive()
    S.wait_for(
        lambda: worker.alive() and receipts(db_url) >= total,
        DONE_S,
        f"all {total} frames; log:\n{worker.log()}",
    )
    S.wait_for(
        lambda: (
            (worker.stats() or {}).get("received", 0)
            == (worker.stats() or {}).get("stored_frames", -1) + worker.stats()["duplicates"]
        ),
        30,
        "the restarted worker to settle",
    )
    worker.stop()
    assert_stored_exactly_once(db_url, sql_store(db_url), terminals, n_frames)
    assert worker.total("rejected_total") == 0
    assert stored_before < total


def test_two_workers_split_the_shared_subscription(
    broker: MosquittoBroker, db_url: str, workers: Any
) -> None:
    n_frames = 100
    terminals = fleet()
    env = {"MIMAMORI_DATABASE_URL": db_url}
    a, b = workers("a", env).start(), workers("b", env).start()
    publish(broker, stream(terminals, n_frames))
    total = len(terminals) * (1 + n_frames)
    S.wait_for(
        lambda: a.alive() and b.alive() and receipts(db_url) >= total,
        DONE_S,
        "both workers to store the stream",
    )
    # Each frame is decided once: stored, or parked when its worker held it
    # over the terminal's bound while the other worker stored the birth (the
    # ingest then releases and stores it itself, which stored_frames does
    # not count; seen on a loaded machine).
    decided = ("stored_frames", "parked")
    S.wait_for(
        lambda: sum(w.total(k) for w in (a, b) for k in decided) >= total,
        10,
        "the stats files to catch up",
    )
    a.stop()
    b.stop()
    stored = a.total("stored_frames"), b.total("stored_frames")
    assert min(stored) > 0, f"one worker got nothing: {stored}"
    assert sum(stored) + a.total("parked") + b.total("parked") == total
    assert parked_now(db_url) == 0  # every parked one released, none left for an operator
    assert a.total("rejected_total") + b.total("rejected_total") == 0
    assert_stored_exactly_once(db_url, sql_store(db_url), terminals, n_frames)


def test_storage_outage_is_retried_and_acknowledges_nothing_early(
    broker: MosquittoBroker, db_url: str, workers: Any
) -> None:
    """Another writer holds the SQLite write lock past the busy timeout: the
    batch fails, nothing is acknowledged, the worker retries; once the lock
    goes, everything is stored exactly once."""
    worker = workers("w", {"MIMAMORI_DATABASE_URL": db_url}).start()
    terminals = fleet()
    blocker = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # e.g. a long maintenance job
        publish(broker, stream(terminals, 10))
        S.wait_for(
            lambda: worker.alive() and (worker.stats() or {}).get("batch_failures", 0) >= 1,
            60,
            "a batch to fail on the locked database",
        )
        assert receipts(db_url) == 0
    finally:
        blocker.rollback()
        blocker.close()
    S.wait_for(lambda: worker.alive() and receipts(db_url) >= 20 * 11, DONE_S, "the retry")
    worker.stop()
    assert_stored_exactly_once(db_url, sql_store(db_url), terminals, 10)


def test_influxdb_backend_stores_the_fleet(
    broker: MosquittoBroker, db_url: str, workers: Any, request: pytest.FixtureRequest
) -> None:
    server = influx_server(request.config)
    created = server.store("ingest")  # the install's job: the worker may not create it
    created.client.close()
    database = created.database
    env = {
        "MIMAMORI_DATABASE_URL": db_url,
        "MIMAMORI_TIMESERIES_BACKEND": "influx",
        "MIMAMORI_INFLUX_URL": server.url,
        "MIMAMORI_INFLUX_DATABASE": database,
    }
    worker = workers("w", env).start()
    terminals = fleet()
    publish(broker, stream(terminals, 20))
    total = 20 * 21
    S.wait_for(lambda: worker.alive() and receipts(db_url) >= total, DONE_S, "the stream")
    worker.stop()
    store = InfluxStore(InfluxClient(server.url), database)
    try:
        assert_stored_exactly_once(db_url, store, terminals, 20)
        assert store.count_raw() == 20 * 20 * 6  # no status frames were sent
    finally:
        store.client.close()
