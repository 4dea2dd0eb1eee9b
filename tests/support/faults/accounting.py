"""Loss and duplicate accounting against the database, and the report the
fault tests print and write."""

from __future__ import annotations

import json
import random
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from cloud.models import FrameReceipt, IngestCounter
from cloud.timeseries import SqlStore
from tests.support import ingest as S
from tests.support.faults.common import LONG, ROOT
from tests.support.faults.fleet import Fleet


def engine(url: str) -> sa.Engine:
    """No pool: each poll opens a fresh connection, so a restarted server is found."""
    return sa.create_engine(url, poolclass=NullPool)


def receipt_count(eng: sa.Engine) -> int:
    with eng.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) or 0)


def account(url: str, fleet: Fleet) -> dict[str, Any]:
    """Generated vs stored: the figures every fault test reports.

    ``stored_once``: generated frames with a receipt; ``missing``: without;
    ``duplicated``: frames the ingest counted as processed more than once
    (``ingest_counters.frames`` above the receipts) plus samples counted
    more than once; ``wrong_values``: stored sensor values that differ from
    what the terminals sent (or are absent).
    """
    eng = engine(url)
    try:
        with eng.connect() as conn:
            t = FrameReceipt.__table__
            keys = {
                (r[0], int(r[1]), int(r[2]))
                for r in conn.execute(sa.select(t.c.terminal_id, t.c.boot, t.c.seq))
            }
            c = IngestCounter.__table__
            frames_n, samples_n = conn.execute(
                sa.select(sa.func.sum(c.c.frames), sa.func.sum(c.c.samples))
            ).one()
        store = SqlStore(eng)
        stored = {p.key: p.value for p in store.iter_points() if not p.channel.startswith("$")}
    finally:
        eng.dispose()
    generated = fleet.generated()
    expected = S.expected_values(fleet.terminals())
    gen = set(generated)
    missing = sorted(gen - keys)
    n_samples = len(expected)
    wrong = sum(1 for k, v in expected.items() if stored.get(k) != v)
    return {
        "generated": len(generated),
        "stored_once": len(gen & keys),
        "missing": len(missing),
        "missing_keys": [list(k) for k in missing[:50]],
        "all_missing": missing,
        "duplicated": max(0, int(frames_n or 0) - len(keys))
        + max(0, int(samples_n or 0) - n_samples),
        "samples_expected": n_samples,
        "samples_counted": int(samples_n or 0),
        "wrong_values": wrong,
        "extra_values": len(set(stored) - set(expected)),
    }


class Report:
    """Figures of one fault test: printed and written to build/faults/<name>.json."""

    def __init__(self, name: str, **figures: Any) -> None:
        self.name = name
        self.figures: dict[str, Any] = {"profile": "long" if LONG else "short", **figures}

    def add(self, **figures: Any) -> None:
        self.figures.update(figures)

    def write(self) -> dict[str, Any]:
        self.figures.pop("all_missing", None)  # keys, for the test's own checks
        out = ROOT / "build" / "faults"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{self.name}.json").write_text(json.dumps(self.figures, indent=2) + "\n")
        shown = {k: v for k, v in self.figures.items() if k != "missing_keys"}
        print(f"\n[faults] {self.name}: {json.dumps(shown)}")
        return self.figures


def first_arrivals(seqs: list[int]) -> list[int]:
    """``seqs`` without repeats: the order in which each frame first arrived."""
    seen: set[int] = set()
    out = []
    for s in seqs:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def random_pause(rng: random.Random, lo: float, hi: float) -> None:
    """Let the stream run for a random while: *where* a fault lands is the variable."""
    time.sleep(rng.uniform(lo, hi))
