"""Loss and duplicate accounting against the database, and the report the
fault tests print and write."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from cloud.codec import decode_frame
from cloud.models import FrameReceipt, IngestCounter
from cloud.timeseries import SqlStore
from tests.support import ingest as S
from tests.support.faults.agents import AgentFleet
from tests.support.faults.common import LONG, ROOT, Key


def engine(url: str) -> sa.Engine:
    """No pool: each poll opens a fresh connection, so a restarted server is found."""
    return sa.create_engine(url, poolclass=NullPool)


def receipt_count(eng: sa.Engine) -> int:
    with eng.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt)) or 0)


def receipt_keys(eng: sa.Engine) -> set[Key]:
    with eng.connect() as conn:
        t = FrameReceipt.__table__
        return {
            (r[0], int(r[1]), int(r[2]))
            for r in conn.execute(sa.select(t.c.terminal_id, t.c.boot, t.c.seq))
        }


def settle(eng: sa.Engine, keys: Collection[Key], limit: float, quiet_s: float = 10.0) -> float:
    """Wait until the cloud stored every frame of ``keys``, or nothing new was
    stored for ``quiet_s`` (frames may be lost: the accounting says which);
    AssertionError after ``limit`` s. Returns the seconds it took."""
    started = time.monotonic()
    wanted = set(keys)
    last = [-1, started]

    def done() -> bool:
        got = receipt_keys(eng)
        if wanted <= got:
            return True
        if len(got) != last[0]:
            last[:] = [len(got), time.monotonic()]
        return time.monotonic() - last[1] > quiet_s

    S.wait_for(done, limit, f"the cloud to store {len(wanted)} frames", 0.2)
    return time.monotonic() - started


def _stored(url: str) -> tuple[set[Key], int, int, dict[Any, float]]:
    """Receipts' keys, the ingest's frame and sample counters, stored sensor values."""
    eng = engine(url)
    try:
        keys = receipt_keys(eng)
        with eng.connect() as conn:
            c = IngestCounter.__table__
            frames_n, samples_n = conn.execute(
                sa.select(sa.func.sum(c.c.frames), sa.func.sum(c.c.samples))
            ).one()
        store = SqlStore(eng)
        stored = {p.key: p.value for p in store.iter_points() if not p.channel.startswith("$")}
    finally:
        eng.dispose()
    return keys, int(frames_n or 0), int(samples_n or 0), stored


def sent_values(payloads: dict[Key, bytes], keys: set[Key]) -> dict[tuple[str, str, int], float]:
    """(terminal, channel, ts) -> engineering value of every sample in the data
    frames among ``payloads`` whose key is in ``keys``, named by the channel
    table of their boot's queued birth."""
    tables: dict[tuple[str, int], dict[int, tuple[str, int]]] = {}
    for (tid, boot, _seq), payload in payloads.items():
        frame = decode_frame(payload)
        if frame["type"] == "birth":
            tables[(tid, boot)] = {c["alias"]: (c["name"], c["exp"]) for c in frame["channels"]}
    out = {}
    for key, payload in payloads.items():
        frame = decode_frame(payload)
        if key not in keys or frame["type"] != "data":
            continue
        table = tables[key[:2]]
        ts = frame["ts"]
        for sample in frame["samples"]:
            ts += sample["dt"]
            for alias, raw in enumerate(sample["values"]):
                if raw is None:
                    continue
                name, exp = table[alias]
                out[(key[0], name, ts)] = raw / 10**-exp if exp < 0 else float(raw * 10**exp)
    return out


def account(url: str, fleet: AgentFleet) -> dict[str, Any]:
    """Queued vs stored, the figures every fault test reports, once
    ``fleet.stop()`` returned.

    A frame an agent queued is ``stored_once`` when the cloud has its
    receipt, or ``waiting_on_flash`` when it is still in the terminal's
    outbox; ``missing`` is neither (the terminal let go of a frame the cloud
    did not keep). ``duplicated``: frames the ingest counted as processed
    more than once (``ingest_counters.frames`` above the receipts) plus
    samples counted more than once; ``wrong_values``: samples of stored data
    frames whose stored value differs from what the frame carried, or that
    are absent; ``extra_values``: stored samples no frame carried.
    """
    keys, frames_n, samples_n, stored = _stored(url)
    generated = fleet.generated()
    gen = set(generated)
    waiting = fleet.still_queued()
    missing = sorted(gen - keys - waiting)
    expected = sent_values(fleet.payloads(), keys)
    return {
        "generated": len(generated),
        "stored_once": len(gen & keys),
        "waiting_on_flash": len(waiting - keys),
        "missing": len(missing),
        "missing_keys": [list(k) for k in missing[:50]],
        "all_missing": missing,
        "duplicated": max(0, frames_n - len(keys)) + max(0, samples_n - len(expected)),
        "samples_expected": len(expected),
        "samples_counted": samples_n,
        "wrong_values": sum(1 for k, v in expected.items() if stored.get(k) != v),
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
