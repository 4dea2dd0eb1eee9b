"""The terminals' link to the broker is slow and lossy the whole time.

Every terminal connection goes through :class:`tests.support.faults.ImpairedLink`:
each direction delayed with jitter, capped in bytes/s, frozen now and
then (stalls: retransmission backoff, what TCP makes of lost packets), and
at random moments one connection is reset (RST). It stands in for the
kernel's netem, which the test machine's kernel lacks (docs/faults.md).
The cloud side (ingest worker, observer) talks to the broker directly.

The terminals run the real agent (:class:`tests.support.faults.AgentFleet`):
it waits for each PUBACK, as umqtt does, so every publish costs a round
trip through the link. After the run, once the cloud has stored everything
queued until then: every frame is stored exactly once with the values sent
(or, for the last ones, still in the terminal's outbox), and each
terminal's frames reached the broker (first copies) and the store in the
order they were queued.

The link's faults come from a fixed seed (8106) like the other fault tests;
``MIMAMORI_FAULT_SEED`` sets another (the report gives the seed used).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker

N = F.profile(20, 100)
RUN_S = F.profile(30.0, 240.0)  # generating, at least
MIN_RESETS = F.profile(2, 20)  # generation goes on until the link reset this many
LINK: dict[str, Any] = F.profile(
    {
        "delay_s": 0.15,
        "jitter_s": 0.10,
        "rate": 64 * 1024,
        "stall_every_s": 20.0,
        "stall_s": (0.3, 2.0),
        "reset_every_s": 10.0,
    },
    {
        "delay_s": 0.30,
        "jitter_s": 0.20,
        "rate": 16 * 1024,
        "stall_every_s": 15.0,
        "stall_s": (0.5, 4.0),
        "reset_every_s": 3.0,
    },
)
DRAIN_S = F.profile(120.0, 300.0)  # the wait's limit, not an expectation


DEFAULT_SEED = 8106  # fixed like the other fault tests; MIMAMORI_FAULT_SEED overrides


def fault_seed() -> int:
    env = os.environ.get("MIMAMORI_FAULT_SEED")
    return int(env) if env else DEFAULT_SEED


def divergence(got: list[int], expected: list[int]) -> dict[str, Any]:
    """Where ``got`` first leaves ``expected``, with a few frames around it."""
    i = next(
        (k for k, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e),
        min(len(got), len(expected)),
    )
    return {
        "at": i,
        "got": got[max(0, i - 3) : i + 6],
        "expected": expected[max(0, i - 3) : i + 6],
        "lengths": [len(got), len(expected)],
    }


def stored_order(eng: sa.Engine) -> dict[str, list[int]]:
    """Each terminal's receipts in the order they were inserted (SQLite's
    rowid grows with every insert; nothing is pruned during the test)."""
    out: dict[str, list[int]] = {}
    with eng.connect() as conn:
        for tid, seq in conn.exec_driver_sql(
            "SELECT terminal_id, seq FROM frame_receipts ORDER BY rowid"
        ):
            out.setdefault(tid, []).append(int(seq))
    return out


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on loopback (one thread per connection)."""
    srv = socket.create_server((HOST, 0))

    def serve(c: socket.socket) -> None:
        with c:
            try:
                while data := c.recv(65536):
                    c.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()


def test_impaired_link_keeps_byte_order_and_resets_with_rst(echo_port: int) -> None:
    """The link itself: jitter larger than the gap between segments
    reorders nothing, a stall loses nothing, and a reset reaches the
    client as an RST."""
    link = F.ImpairedLink(
        echo_port,
        seed=fault_seed(),
        delay_s=0.02,
        jitter_s=0.02,
        rate=4 * 1024 * 1024,
        stall_every_s=0.2,
        stall_s=(0.05, 0.1),
        reset_every_s=None,
        mss=100,
    )
    try:
        with socket.create_connection((HOST, link.port), 30) as c:
            for _ in range(1000):  # rounds until stalls came in between
                sent = os.urandom(64 * 1024)
                threading.Thread(target=c.sendall, args=(sent,), daemon=True).start()
                got = bytearray()
                while len(got) < len(sent):
                    chunk = c.recv(65536)
                    assert chunk, "the link closed the connection"
                    got += chunk
                assert bytes(got) == sent
                if link.figures()["stalls"] >= 3:
                    break
        figures = link.figures()
        assert figures["stalls"] >= 3 and figures["dropped_bytes"] == 0, figures
    finally:
        link.close()
    link = F.ImpairedLink(
        echo_port,
        seed=fault_seed(),
        delay_s=0.0,
        jitter_s=0.0,
        stall_every_s=None,
        reset_every_s=0.1,
    )
    try:
        with (
            socket.create_connection((HOST, link.port), 30) as c,
            pytest.raises(ConnectionResetError),
        ):
            while c.recv(1):  # nothing to read: only the reset ends the wait
                pass
        assert link.figures()["resets"] == 1
    finally:
        link.close()


@pytest.mark.timeout(F.profile(300, 900))  # the long run generates for 240 s
def test_slow_lossy_link_loses_nothing_and_keeps_order(
    broker: MosquittoBroker, sqlite_url: str, tmp_path: Path
) -> None:
    seed = fault_seed()
    eng = F.engine(sqlite_url)
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    observer = F.Observer(broker)
    link = F.ImpairedLink(broker.ports["terminal"], seed=seed, **LINK)
    fleet = F.AgentFleet(link.port, N, tmp_path / "terminals")
    try:
        fleet.start()
        fleet.wait_connected(60)
        started = time.monotonic()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 5, 60, "the stream to flow")
        S.wait_for(
            lambda: (
                fleet.check() and time.monotonic() - started >= RUN_S and link.resets >= MIN_RESETS
            ),
            RUN_S + 180,
            f"{RUN_S} s of stream and {MIN_RESETS} resets (seed {seed})",
            0.2,
        )
        stopped = time.monotonic()
        generating = stopped - started
        drain = F.settle(eng, fleet.generated(), DRAIN_S)
        duplicates_dropped = worker.total("duplicates")
        lk = link.figures()  # before the terminals' own disconnects
        fleet.stop()
    finally:
        fleet.stop()
        link.close()
        observer.close()
        worker.stop()
    try:
        stored = stored_order(eng)
    finally:
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    broker_disorder: dict[str, Any] = {}
    store_disorder: dict[str, Any] = {}
    for t in fleet.terms:
        queued = [k[2] for k in t.generated()]  # live births and wills are not queued
        mine = set(queued)
        arrived = [s for s in F.first_arrivals(observer.order.get(t.tid, [])) if s in mine]
        kept = [s for s in stored.get(t.tid, []) if s in mine]
        if arrived != [s for s in queued if s in set(arrived)]:
            broker_disorder[t.tid] = divergence(arrived, queued)
        if kept != [s for s in queued if s in set(kept)]:
            store_disorder[t.tid] = divergence(kept, queued)
    figures.update(
        terminals=N,
        seed=seed,
        generating_s=round(generating, 1),
        drain_s=round(drain, 3),
        resets=lk["resets"],
        stalls=lk["stalls"],
        **fleet.resend_figures(),
        duplicates_dropped=duplicates_dropped,
        out_of_order_at_broker=broker_disorder,
        out_of_order_stored=store_disorder,
        link=lk,
    )
    F.Report("slow_link", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures
    assert not broker_disorder and not store_disorder, figures
    assert lk["resets"] >= MIN_RESETS and lk["stalls"] > 0, figures
    assert figures["stored_once"] >= N * RUN_S // 2, figures
