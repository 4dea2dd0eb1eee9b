"""Broker down: nothing lost, nothing stored twice, late data marked historical.

The outage lasts ``HIL_BROKER_OUTAGE_S`` seconds (default 30 so the suite
stays short; ``HIL_BROKER_OUTAGE_S=120`` gives the two minutes of the
acceptance criterion). The broker is the session's own Mosquitto, stopped
with SIGTERM and started again on the same ports with its persistence, so
the ingest worker's session (and what it had not acknowledged) survives.
"""

from __future__ import annotations

import itertools
import os
import re
import time

from hil_tests.cloud import HISTORICAL_LAG_S, Cloud, poll
from hil_tests.dut import VirtualDut, refusing_port
from hil_tests.steps import addresses, commission, wait_sample
from tests.support.broker import MosquittoBroker

OUTAGE_S = float(os.environ.get("HIL_BROKER_OUTAGE_S", "30"))
RECOVER_S = 90.0  # reconnect back-off of terminal and ingest (30 s max) plus the backlog


def test_broker_outage_loses_nothing_stores_nothing_twice_marks_late_data(
    cloud: Cloud, dut: VirtualDut, broker: MosquittoBroker
) -> None:
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "ops")])
    first = wait_sample(cloud, dut, "leak1.ior", lambda p: True, "data before the outage")
    ports = dict(broker.ports)
    broker.stop()
    # Hold the broker's ports while it is down (refusing, as a stopped broker
    # does): on a busy host another process could take one, and the broker
    # would come back elsewhere, out of its clients' reach.
    held = [refusing_port(p) for p in ports.values()]
    try:
        down_at = time.time()
        # The outage itself: watch the terminal keep sampling and retrying meanwhile.
        poll(
            lambda: time.time() - down_at >= OUTAGE_S and dut.log().count("connect failed"),
            OUTAGE_S + 10,
            lambda: f"the terminal to notice the outage:\n{dut.log()[-2000:]}",
            interval=0.5,
        )
    finally:
        for sock in held:
            sock.close()
        broker.start()
    assert broker.ports == ports, "the broker came back on other ports"
    up_at = time.time()
    # Sampled after the reconnect, so by FIFO the whole backlog is in before it.
    last = wait_sample(
        cloud,
        dut,
        "leak1.ior",
        lambda p: not p.historical,
        "live data after the outage",
        after=int(up_at) + 2,
        timeout=RECOVER_S,
    )

    points = [p for p in cloud.samples(dut.tid, "leak1.ior") if first.ts <= p.ts <= last.ts]
    stamps = [p.ts for p in points]
    assert len(stamps) == len(set(stamps))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(gaps) <= 2, f"samples lost: gaps {sorted(gaps)[-5:]}"  # 1 s sampling
    assert len(points) >= (last.ts - first.ts) * 0.9
    # sampled during the outage -> delivered late -> historical, at their own times
    during = [p for p in points if down_at + 1 <= p.ts <= up_at - 1]
    assert len(during) >= (OUTAGE_S - 2) * 0.9
    assert all(p.historical for p in during)
    assert not [p for p in points if p.ts >= up_at + 30 + HISTORICAL_LAG_S and p.historical]

    # every frame of the boot arrived once: seqs are contiguous except the
    # numbers each connect spent on its will (a death frame only if it fired)
    receipts = [seq for boot, seq in cloud.receipts(dut.tid) if boot == 1]
    wills = {int(n) - 1 for n in re.findall(r"boot 1, birth seq (\d+)", dut.log())}
    assert len(wills) >= 2, dut.log()  # connected, and again after the outage
    assert sorted(set(receipts) | wills) == list(range(max(receipts) + 1))
    stats = cloud.ingest_stats()
    assert stats.get("rejected_total", 0) == 0, stats
    print(
        f"outage {OUTAGE_S:.0f} s: {len(during)} late samples, back {last.ts - up_at:.1f} s "
        f"after the broker, ingest duplicates {stats.get('duplicates')}"
    )
