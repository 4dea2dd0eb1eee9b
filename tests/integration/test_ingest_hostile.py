"""One hostile terminal next to 100 honest ones, on a real Mosquitto and the
ingest worker process: data under ever new boot numbers (no birth for any)
must not fill the worker's receive window. Honest frames keep flowing while
the hostile frames wait; the hostile ones beyond the per-terminal bound are
parked at once, the rest when their wait ends; none is lost.

The latency figures (honest frames with and without the hostile terminal)
are measured by ``bench/bench_ingest_hostile.py``, not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import FrameReceipt, ParkedFrame
from cloud.services import parking
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker

pytestmark = pytest.mark.integration

HONEST = [f"H{i:03d}" for i in range(100)]
HOSTILE = "X001"
ACCOUNTS = [
    account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
    *(account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in [*HONEST, HOSTILE]),
]
WINDOW = 60  # the worker's Receive Maximum
HELD = 5  # frames one terminal may have waiting for a birth
BIRTH_WAIT_S = 120  # far longer than the honest stream needs
HOSTILE_FRAMES = 150  # well over the window
HONEST_FRAMES = 5
FLOW_S = 60.0  # the honest frames' deadline: half the birth wait


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    workdir = tmp_path_factory.mktemp("hostile-broker")
    with MosquittoBroker(workdir, ACCOUNTS, max_queued_messages=0, max_queued_bytes=0) as b:
        yield b


def count(url: str, stmt: Any) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(stmt) or 0)
    finally:
        engine.dispose()


def parked(url: str, reason: str | None = None) -> int:
    stmt = sa.select(sa.func.count()).select_from(ParkedFrame)
    stmt = stmt.where(ParkedFrame.terminal_id == HOSTILE)
    if reason is not None:
        stmt = stmt.where(ParkedFrame.reason == reason)
    return count(url, stmt)


def stored(url: str) -> int:
    return count(url, sa.select(sa.func.count()).select_from(FrameReceipt))


def publish(broker: MosquittoBroker, frames_of: dict[str, list[dict[str, Any]]]) -> None:
    pubs = [S.Publisher(HOST, broker.ports["terminal"], tid) for tid in frames_of]
    try:
        for pub, frames in zip(pubs, frames_of.values(), strict=True):
            for frame in frames:
                pub.publish_frame(frame)
        for pub in pubs:
            pub.flush(FLOW_S)
    finally:
        for pub in pubs:
            pub.close()


def test_a_terminal_with_ever_new_boots_does_not_stall_the_others(
    broker: MosquittoBroker, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    with db.session_factory(engine)() as s:
        S.seed(s, [*HONEST, HOSTILE])
    engine.dispose()
    options = ["--receive-maximum", str(WINDOW), "--batch-size", "50"]
    held = ["--held-per-terminal", str(HELD)]
    worker = S.IngestProcess(
        broker,
        tmp_path,
        "hostile-w",
        "hostile",
        {"MIMAMORI_DATABASE_URL": url},
        extra=[*options, *held, "--birth-wait", str(BIRTH_WAIT_S)],
    ).start()
    honest = [S.Terminal(t, boot=1, start=S.T0 + i) for i, t in enumerate(HONEST)]
    publish(broker, {t.tid: [t.birth()] for t in honest})
    S.wait_for(lambda: stored(url) == len(HONEST), FLOW_S, "the honest births")

    # The hostile terminal: data frames, each under a boot never announced.
    attack = [S.data(HOSTILE, 1000 + k, 0, S.T0, [[1] * 6]) for k in range(HOSTILE_FRAMES)]
    publish(broker, {HOSTILE: attack})
    publish(broker, {t.tid: [t.data() for _ in range(HONEST_FRAMES)] for t in honest})
    # Every honest frame is stored long before any hostile frame's wait ends.
    want = len(HONEST) * (1 + HONEST_FRAMES)
    S.wait_for(
        lambda: stored(url) == want and parked(url) == HOSTILE_FRAMES - HELD,
        FLOW_S,
        f"the honest stream past the hostile terminal; log:\n{worker.log()}",
    )
    assert parked(url, parking.HELD_OVER_LIMIT) == HOSTILE_FRAMES - HELD
    worker.stop()

    # The frames it still held were never acknowledged: the broker keeps them
    # for the worker's session, and they are parked when their wait ends.
    again = S.IngestProcess(
        broker,
        tmp_path,
        "hostile-w",
        "hostile",
        {"MIMAMORI_DATABASE_URL": url},
        extra=[*options, *held, "--birth-wait", "0"],
    ).start()
    S.wait_for(
        lambda: parked(url) == HOSTILE_FRAMES,
        FLOW_S,
        f"the held frames to be parked; log:\n{again.log()}",
    )
    assert parked(url, parking.NO_BIRTH) == HELD
    assert stored(url) == want
    again.stop()
