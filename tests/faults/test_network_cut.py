"""The terminals' link to the broker is cut for several keepalives, then restored.

A TCP relay between the terminals and the broker's terminal listener is
closed (every connection dropped, the port refusing) while the terminals go
on sampling into their outboxes; the ingest stays connected. After the
link is back on the same port: every frame is stored exactly once, and
what was queued during the cut is delivered in its original order,
followed by the live stream.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
CUT_S = F.profile(12.0, 60.0)  # terminals' keepalive is 5 s: several missed pings
PERIOD = F.profile(0.1, 0.5)


def first_arrivals(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def test_link_cut_then_restored_delivers_everything_in_order(
    broker: MosquittoBroker, sqlite_url: str, tmp_path: Path
) -> None:
    worker = F.IngestProcess(broker, tmp_path, sqlite_url).start()
    observer = F.Observer(broker)
    link = F.CuttableLink(broker.ports["terminal"])
    fleet = F.Fleet(link.port, N, period=PERIOD)
    eng = F.engine(sqlite_url)
    try:
        fleet.wait_connected()
        fleet.start()
        S.wait_for(lambda: F.receipt_count(eng) >= N * 5, 30, "the stream to flow")
        link.cut()
        time.sleep(CUT_S)  # the fault's duration, not synchronisation
        link.restore()
        restored = time.monotonic()
        try:
            S.wait_for(
                lambda: all(t.offline and all(k in t.acked_at for k in t.offline)
                            for t in fleet.terms),
                120, "every terminal to deliver what it queued offline", 0.02)
        except AssertionError as err:
            late = [(t.tid, t.connected, t.connects, len(t.offline), len(t.pending))
                    for t in fleet.terms
                    if not (t.offline and all(k in t.acked_at for k in t.offline))]
            raise AssertionError(f"{err}: (tid, connected, connects, offline, pending) "
                                 f"{late[:10]} ({len(late)} late)") from err
        recovery = time.monotonic() - restored
        time.sleep(1.0)  # some live stream after the backlog
        fleet.stop_generating()
        fleet.drain()
        total = len(fleet.generated())
        S.wait_for(lambda: F.receipt_count(eng) >= total, 60, f"all {total} frames")
        worker.stop()
    finally:
        fleet.close()
        link.cut()
        observer.close()
        eng.dispose()
    figures = F.account(sqlite_url, fleet)
    out_of_order = []
    for t in fleet.terms:
        first = t.offline[0][2]
        seqs = [s for s in first_arrivals(observer.order.get(t.tid, [])) if s >= first]
        if seqs != sorted(seqs) or len(seqs) != t.generated[-1][2] - first + 1:
            out_of_order.append(t.tid)
    figures.update(terminals=N, cut_s=CUT_S,
                   queued_offline=sum(len(t.offline) for t in fleet.terms),
                   reconnects=sum(t.connects - 1 for t in fleet.terms),
                   recovery_s=round(recovery, 3), out_of_order_terminals=out_of_order)
    F.Report("network_cut", **figures).write()
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0, figures
    assert figures["queued_offline"] >= N * int(CUT_S / PERIOD) // 2, figures
    assert out_of_order == [], figures
