"""SIGKILL of the broker, the ingest worker and the database mid-stream.

N terminals with outboxes publish QoS 1 frames; at random moments one
component is killed with SIGKILL, left dead for a random while (the stream
goes on), and restarted. Afterwards every frame the terminals generated is
looked up in the database.

Expectations:

- ingest worker, PostgreSQL: nothing missing, nothing processed twice;
- Mosquitto (2.0.11, Debian 12): nothing processed twice; a frame may be
  missing only if the broker PUBACKed it to its terminal

  a) within ``BROKER_WINDOW_S`` before a kill: it was only in the broker's
     memory (the store is written every ``autosave_interval``, not before
     each PUBACK); or
  b) after the restart but before the ingest worker had reconnected and
     subscribed again: Mosquitto restores the worker's session with its
     shared subscription, yet delivers nothing to it, so what arrives in
     that gap is acknowledged and dropped (reproduced with a bare paho
     client; the worker's resubscribe makes delivery work again).

  Measured: nearly every frame PUBACKed between the restart and the ingest's
  return is lost, and a few after it. The test asserts only what holds
  (no duplicates, nothing lost by the outboxes, nothing lost before the
  first kill) and reports the loss split by cause: an open defect, see
  docs/faults.md.
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
BROKER_WINDOW_S = 2.0
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
    figures.update(terminals=N, kills=KILLS, recovery_s=recoveries,
                   recovery_max_s=max(recoveries), seed=seed)
    return figures, fleet, kill_times


def test_sigkill_ingest_worker(broker: MosquittoBroker, sqlite_url: str, tmp_path: Path) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    figures, _f, _k = run_kills("kill_ingest", broker=broker, url=sqlite_url, worker=worker,
                                kill=worker.kill, restart=worker.start, seed=8101)
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
            figures, _f, _k = run_kills("kill_postgres", broker=broker, url=url, worker=worker,
                                        kill=server.kill, restart=server.restart, seed=8102)
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
    S.wait_for(lambda: "session present: True" in worker.log(), 30,
               "the ingest to resume its saved session")
    gaps: list[tuple[float, float]] = []  # (broker up again, ingest subscribed again)

    def restart() -> None:
        connects = worker.log().count("connected to")
        broker.start()
        up = time.monotonic()
        S.wait_for(lambda: worker.log().count("connected to") > connects, 60,
                   "the ingest to reconnect", 0.02)
        gaps.append((up, time.monotonic() + SUBACK_MARGIN_S))

    figures, fleet, kill_times = run_kills(
        "kill_broker", broker=broker, url=sqlite_url, worker=worker,
        kill=lambda: F.kill_broker(broker), restart=restart, seed=8103)
    acked = fleet.acked_at()
    in_memory = before_resubscribe = later = 0
    after_restart: list[float] = []
    for key in figures.pop("all_missing"):  # type: ignore[attr-defined]
        t = acked.get(key)
        assert t is not None, f"{key} missing but never PUBACKed: the outbox lost it"
        assert t >= kill_times[0] - BROKER_WINDOW_S, f"{key} lost before any fault: {figures}"
        if any(0 <= k - t <= BROKER_WINDOW_S for k in kill_times):
            in_memory += 1
        elif any(up <= t <= sub for up, sub in gaps):
            before_resubscribe += 1
        else:
            later += 1
        ups = [t - up for up, _s in gaps if t >= up]
        if ups:
            after_restart.append(min(ups))
    figures.update(lost_in_broker_memory=in_memory,
                   lost_before_ingest_resubscribed=before_resubscribe,
                   lost_after_ingest_resubscribed=later,
                   lost_latest_after_restart_s=round(max(after_restart, default=0.0), 3),
                   ingest_away_s=[round(sub - up, 3) for up, sub in gaps],
                   window_s=BROKER_WINDOW_S)
    F.Report("kill_broker", **figures).write()
    assert figures["duplicated"] == 0, figures
    assert figures["extra_values"] == 0, figures
