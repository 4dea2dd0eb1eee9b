"""SIGKILL of the broker, the ingest worker and the database mid-stream.

N terminals with outboxes publish QoS 1 frames; at random moments one
component is killed with SIGKILL, left dead for a random while (the stream
goes on), and restarted. Afterwards every frame the terminals generated is
looked up in the database.

Expectation, for all three: nothing missing, nothing processed twice.

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
The report gives the resends (``resends``, ``resent_frames``,
``ack_timeouts``) and the duplicates the ingest dropped.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from cloud import db
from tests.faults.conftest import seed_database
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
KILLS = F.profile(3, 20)
PERIOD = F.profile(0.05, 0.25)  # seconds between frames of one terminal
SUBACK_MARGIN_S = 0.5  # CONNACK seen in the log -> subscription active
DONE_S = 180.0


def run_kills(
    name: str,
    *,
    broker: MosquittoBroker,
    url: str,
    worker: F.IngestProcess,
    kill: Callable[[], None],
    restart: Callable[[], object],
    seed: int,
) -> tuple[dict[str, object], F.Fleet, list[float]]:
    """Stream, kill KILLS times at random moments, drain, count."""
    rng = random.Random(seed)
    eng = F.engine(url)
    fleet = F.Fleet(broker.ports["terminal"], N, period=PERIOD)
    kill_times: list[float] = []
    recoveries: list[float] = []
    try:
        fleet.wait_connected()
        fleet.start()
        for _ in range(KILLS):
            F.random_pause(rng, 1.0, 3.0)
            kill_times.append(time.monotonic())
            kill()
            F.random_pause(rng, 0.5, 2.0)  # dead while the stream goes on
            restart()
            restarted = time.monotonic()
            base = F.receipt_count(eng)
            S.wait_for(lambda b=base: F.receipt_count(eng) > b, 60, "storing to resume")
            recoveries.append(round(time.monotonic() - restarted, 3))
        F.random_pause(rng, 1.0, 2.0)
        fleet.stop_generating()
        fleet.drain()
        total = len(fleet.generated())
        last = [-1, time.monotonic()]

        def settled() -> bool:
            n = F.receipt_count(eng)
            if n >= total:
                return True
            if n != last[0]:
                last[:] = [n, time.monotonic()]
            # frames may have been lost: stop once nothing moves for 10 s and
            # let the accounting say what is missing
            return time.monotonic() - last[1] > 10.0

        S.wait_for(settled, DONE_S, f"all {total} frames; log:\n{worker.log()}", 0.2)
        worker.stop()
    finally:
        fleet.close()
        eng.dispose()
    figures = F.account(url, fleet)
    figures.update(
        terminals=N,
        kills=KILLS,
        recovery_s=recoveries,
        recovery_max_s=max(recoveries),
        seed=seed,
        duplicates_dropped=worker.total("duplicates"),
        **fleet.resend_figures(),
    )
    return figures, fleet, kill_times


def test_sigkill_ingest_worker(broker: MosquittoBroker, sqlite_url: str, tmp_path: Path) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    figures, _f, _k = run_kills(
        "kill_ingest",
        broker=broker,
        url=sqlite_url,
        worker=worker,
        kill=worker.kill,
        restart=worker.start,
        seed=8101,
    )
    F.Report("kill_ingest", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures


def test_sigkill_postgres(broker: MosquittoBroker, tmp_path: Path) -> None:
    server = F.KillablePostgres().start()
    try:
        url = server.create_database("faults")
        db.upgrade(url)
        seed_database(url, N)
        worker = F.IngestProcess(broker, tmp_path, url).start()
        try:
            figures, _f, _k = run_kills(
                "kill_postgres",
                broker=broker,
                url=url,
                worker=worker,
                kill=server.kill,
                restart=server.restart,
                seed=8102,
            )
        finally:
            worker.stop()
    finally:
        server.stop()
    F.Report("kill_postgres", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures


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

    figures, _fleet, _kills = run_kills(
        "kill_broker",
        broker=broker,
        url=sqlite_url,
        worker=worker,
        kill=lambda: F.kill_broker(broker),
        restart=restart,
        seed=8103,
    )
    figures.update(ingest_away_s=[round(sub - up, 3) for up, sub in gaps])
    F.Report("kill_broker", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0 and figures["extra_values"] == 0, figures
