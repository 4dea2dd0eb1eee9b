"""SIGKILL of the broker, the ingest worker and the database mid-stream.

N terminals, the real agent (:class:`tests.support.faults.AgentFleet`),
sample once a second and publish each sample in a QoS 1 frame; at random
moments one component is killed with SIGKILL, left dead for a random while
(the stream goes on), and restarted. Once the cloud has stored everything
the terminals queued until then (or nothing moves for 10 s) the terminals
stop, and every frame they queued is looked up in the database and in their
flash outboxes.

Expectation, for all three: nothing missing (every queued frame stored, or
still in the terminal's outbox), nothing processed twice, every sample
stored with the value its frame carried.

The broker is the hard case. Mosquitto (2.0.11, Debian 12) PUBACKs a frame
before it has written its store (every ``autosave_interval``) or delivered
it, so a SIGKILL loses what it had only in memory; and after a restart it
restores the ingest's session with its shared subscription yet delivers
nothing to it until the worker subscribes again, so what arrives in that gap
is acknowledged and dropped. Before terminals waited for the cloud's
application ack (``protocol/README.md``, ack) about half of the frames
published between the restart and the ingest's return were lost that way.
Now a frame leaves a terminal's outbox only when the ingest's ack names it:
the terminals resend what was not acked after they reconnect, and after an
ack timeout for what the broker dropped while their connection stayed up.
The report gives what the terminals sent again (``publishes`` against
``generated``, ``ack_timeouts``, ``reconnects``) and the duplicates the
ingest dropped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud import db
from tests.faults.conftest import seed_database
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
KILLS = F.profile(3, 20)
SUBACK_MARGIN_S = 0.5  # CONNACK seen in the log -> subscription active
DONE_S = 180.0


def run_kills(
    *,
    broker: MosquittoBroker,
    url: str,
    worker: S.IngestProcess,
    kill: Callable[[], None],
    restart: Callable[[], object],
    seed: int,
    workdir: Path,
) -> dict[str, Any]:
    """Stream, kill KILLS times at random moments, settle, stop the terminals, count."""
    rng = random.Random(seed)
    eng = F.engine(url)
    fleet = F.AgentFleet(broker.ports["terminal"], N, workdir / "terminals")
    recoveries: list[float] = []
    try:
        fleet.start()
        fleet.wait_connected()
        S.wait_for(lambda: F.receipt_count(eng) >= 3 * N, 60, "the stream to flow")
        for _ in range(KILLS):
            F.random_pause(rng, 1.0, 3.0)
            kill()
            F.random_pause(rng, 0.5, 2.0)  # dead while the stream goes on
            restart()
            restarted = time.monotonic()
            base = F.receipt_count(eng)
            S.wait_for(lambda b=base: F.receipt_count(eng) > b, 60, "storing to resume")
            recoveries.append(round(time.monotonic() - restarted, 3))
        F.random_pause(rng, 1.0, 2.0)
        settle_s = F.settle(eng, fleet.generated(), DONE_S)
        fleet.stop()
        worker.stop()
    finally:
        fleet.stop()
        eng.dispose()
    figures = F.account(url, fleet)
    figures.update(
        terminals=N,
        kills=KILLS,
        recovery_s=recoveries,
        recovery_max_s=max(recoveries),
        settle_s=round(settle_s, 2),
        seed=seed,
        duplicates_dropped=worker.total("duplicates"),
        **fleet.resend_figures(),
    )
    return figures


def check(figures: dict[str, Any]) -> None:
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures
    # about one frame a second per terminal for at least 5 s
    assert figures["stored_once"] >= 5 * N, figures


def test_sigkill_ingest_worker(broker: MosquittoBroker, sqlite_url: str, tmp_path: Path) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    figures = run_kills(
        broker=broker,
        url=sqlite_url,
        worker=worker,
        kill=worker.kill,
        restart=worker.start,
        seed=8101,
        workdir=tmp_path,
    )
    F.Report("kill_ingest", **figures).write()
    check(figures)


def test_sigkill_postgres(broker: MosquittoBroker, tmp_path: Path) -> None:
    server = F.KillablePostgres().start()
    try:
        url = server.create_database("faults")
        db.upgrade(url)
        seed_database(url, N)
        worker = F.IngestProcess(broker, tmp_path, url).start()
        try:
            figures = run_kills(
                broker=broker,
                url=url,
                worker=worker,
                kill=server.kill,
                restart=server.restart,
                seed=8102,
                workdir=tmp_path,
            )
        finally:
            worker.stop()
    finally:
        server.stop()
    F.Report("kill_postgres", **figures).write()
    check(figures)


def test_sigkill_broker(broker: MosquittoBroker, sqlite_url: str, tmp_path: Path) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    # A broker that has run past one autosave_interval has the ingest's
    # session (its subscription) in its store; a clean restart saves it now.
    broker.stop()
    broker.start()
    S.wait_for(
        lambda: "session present: True" in worker.log(),
        30,
        "the ingest to resume its saved session",
    )
    gaps: list[tuple[float, float]] = []  # (broker up again, ingest subscribed again)

    def restart() -> None:
        connects = worker.log().count("connected to")
        broker.start()
        up = time.monotonic()
        S.wait_for(
            lambda: worker.log().count("connected to") > connects,
            60,
            "the ingest to reconnect",
            0.02,
        )
        gaps.append((up, time.monotonic() + SUBACK_MARGIN_S))

    figures = run_kills(
        broker=broker,
        url=sqlite_url,
        worker=worker,
        kill=lambda: F.kill_broker(broker),
        restart=restart,
        seed=8103,
        workdir=tmp_path,
    )
    figures.update(ingest_away_s=[round(sub - up, 3) for up, sub in gaps])
    F.Report("kill_broker", **figures).write()
    check(figures)
