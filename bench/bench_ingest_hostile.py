"""Honest terminals' latency next to a hostile one (issue: one terminal must
not starve the ingest).

usage: python bench/bench_ingest_hostile.py [--honest 100] [--rounds 20]
                                            [--hostile-frames 2000] [--json FILE]

Setup, all real: the project's Mosquitto (tests/support/broker.py), a
migrated SQLite file, one ``python -m cloud.ingest`` worker with the shipped
defaults (Receive Maximum 1000, ``--birth-wait`` 30 s, ``--held-per-terminal``
20). ``--honest`` terminals with their own credentials send their birth,
then in each round every one of them publishes one data frame (six
channels); a round's latency per frame is from its publish to the cloud's
application ack reaching the terminal (``mm/v1/<tid>/down/ack``: the frame
is committed). Three runs:

- ``quiet``: the honest terminals alone;
- ``hostile``: first a hostile terminal publishes ``--hostile-frames`` data
  frames, each under a boot never announced (none has a birth, so each
  would wait 30 s unacknowledged), then the same rounds;
- ``hostile, unbounded``: the same with ``--held-per-terminal`` so large
  that nothing is parked early (what the worker did before the bound): the
  window fills and the honest frames wait for the hostile ones' wait.

Prints one JSON object and a markdown table (p50, p99, max per run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud import db
from cloud.broker import account_from_row
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker

HOSTILE = "X001"
DONE_S = 120.0


class TimedPublisher(S.Publisher):
    """A terminal that notes when the cloud's ack for each of its frames came."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.acked_at: dict[tuple[int, int], float] = {}
        self.lock = threading.Lock()
        super().__init__(*args, listen_acks=True, **kwargs)

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        now = time.monotonic()
        before = set(self.acked)
        super()._on_message(c, u, msg)
        with self.lock:
            for key in self.acked - before:
                self.acked_at.setdefault(key, now)


def run(workdir: Path, honest: int, rounds: int, hostile: int, held: int) -> list[float]:
    tids = [f"H{i:03d}" for i in range(honest)]
    accounts = [
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
        *(account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in [*tids, HOSTILE]),
    ]
    latencies: list[float] = []
    with MosquittoBroker(workdir, accounts, max_queued_messages=0, max_queued_bytes=0) as broker:
        url = S.migrated_sqlite(workdir, workdir)
        engine = db.make_engine(url)
        with db.session_factory(engine)() as s:
            S.seed(s, [*tids, HOSTILE])
        engine.dispose()
        worker = S.IngestProcess(
            broker,
            workdir,
            "bench-w",
            "bench",
            {"MIMAMORI_DATABASE_URL": url},
            extra=["--held-per-terminal", str(held)],
        ).start()
        terminals = [S.Terminal(t, boot=1, start=S.T0 + i) for i, t in enumerate(tids)]
        pubs = [TimedPublisher(HOST, broker.ports["terminal"], t) for t in tids]
        try:
            for pub, term in zip(pubs, terminals, strict=True):
                pub.publish_frame(term.birth())
            S.wait_for(lambda: all(p.acked for p in pubs), DONE_S, "the births' acks")
            if hostile:
                bad = S.Publisher(HOST, broker.ports["terminal"], HOSTILE)
                for k in range(hostile):
                    bad.publish_frame(S.data(HOSTILE, 1000 + k, 0, S.T0, [[1] * 6]))
                bad.flush(DONE_S)
                bad.close()
            for _ in range(rounds):
                sent: list[tuple[TimedPublisher, tuple[int, int], float]] = []
                for pub, term in zip(pubs, terminals, strict=True):
                    frame = term.data()
                    sent.append((pub, (frame["boot"], frame["seq"]), time.monotonic()))
                    pub.publish_frame(frame)
                S.wait_for(
                    lambda sent=sent: all(key in p.acked_at for p, key, _t in sent),
                    DONE_S,
                    "a round's acks",
                )
                latencies.extend(p.acked_at[key] - t for p, key, t in sent)
        finally:
            for pub in pubs:
                pub.close()
            worker.stop()
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "frames": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--honest", type=int, default=100)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--hostile-frames", type=int, default=2000)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = {}
    for name, hostile, held in (
        ("quiet", 0, 20),
        ("hostile", args.hostile_frames, 20),
        ("hostile, unbounded", args.hostile_frames, 10**6),
    ):
        with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
            results[name] = summary(run(Path(tmp), args.honest, args.rounds, hostile, held))
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\n| run | frames | p50 | p99 | max |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['frames']} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
