"""Terminal power loss during outbox writes: SIGKILL of a writing process.

A child process runs the real ``edge.outbox.Outbox`` (CPython, a real
directory) and writes data frames as fast as it can, acknowledging the
oldest now and then; the test SIGKILLs it at random moments, most of them
inside a write, then opens the outbox as the rebooted terminal would.
Every frame whose ``put`` had returned and that was not acknowledged must be
there, byte for byte, in order; acknowledged frames may come back (at least
once), nothing else may. The bit-exact power cut (a write stopped after any
byte) is covered by the outbox's crash hook in tests/unit and tests/mpy.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.outbox import Outbox
from protocol import frames
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.faults import ROOT

CUTS = F.profile(20, 200)


# Every cut reopens and decodes the whole queue, which keeps growing (a
# quarter of the frames stay unacknowledged): the long run's 200 cuts take
# more than the suite's 300 s per test.
@pytest.mark.timeout(F.profile(300, 1800))
def test_sigkill_mid_write_loses_no_accepted_frame(tmp_path: Path) -> None:
    rng = random.Random(8104)
    directory = tmp_path / "outbox"
    put: dict[int, int] = {}  # rid -> seq, put() returned
    acked: set[int] = set()
    next_seq = 0
    lost: list[int] = []
    resent_acked = 0
    reopen_s: list[float] = []
    for _ in range(CUTS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.faults", str(directory), str(next_seq)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(child.stdout,), daemon=True)
        reader.start()
        S.wait_for(
            lambda c=child, seen=lines: len(seen) > 5 or c.poll() is not None,
            30,
            "the writer to start",
        )
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        time.sleep(rng.uniform(0.0, 0.3))  # where the cut lands is the variable
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        reader.join(10)
        for line in lines:
            tag, *rest = line.split()
            if tag == "P":
                put[int(rest[0])] = int(rest[1])
            elif tag == "A":
                acked.add(int(rest[0]))
        t0 = time.monotonic()
        ob = Outbox(str(directory), budget=8 * 1024 * 1024, seg_bytes=4096)
        queued = ob.peek(10**6)
        reopen_s.append(time.monotonic() - t0)
        rids = [rid for rid, _k, _p in queued]
        assert rids == sorted(rids), "the outbox changed the order"
        seqs = {}
        for rid, kind, payload in queued:
            frame = frames.decode(payload)  # raises on a damaged frame
            assert kind == "data"
            seqs[rid] = frame["seq"]
        lost = [rid for rid, seq in put.items() if rid not in acked and seqs.get(rid) != seq]
        assert lost == [], f"accepted, unacknowledged frames gone: {lost[:20]}"
        resent_acked += sum(1 for rid in rids if rid in acked)
        unknown = [rid for rid in rids if rid not in put]
        assert len(unknown) <= 1, f"frames nobody put: {unknown}"  # killed before printing
        # Such a frame was put all the same; it stays queued into later cuts.
        put.update((rid, seqs[rid]) for rid in unknown)
        next_seq = max([*put.values(), *seqs.values()], default=-1) + 1
        assert ob.dropped == 0
    figures = {
        "cuts": CUTS,
        "frames_put": len(put),
        "acked": len(acked),
        "lost_unacked": len(lost),
        "acked_frames_resent": resent_acked,
        "reopen_max_s": round(max(reopen_s), 4),
        "queued_at_last_reopen": len(rids),
    }
    F.Report("power_loss", **figures).write()
    assert lost == [], figures
    assert len(put) > CUTS * 5, figures
