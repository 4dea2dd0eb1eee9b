"""Power loss: a process writing an outbox that the test kills mid-write."""

from __future__ import annotations

import random

from protocol import frames
from tests.support import ingest as S


def outbox_writer(directory: str, first_seq: int) -> None:
    """Child process of the power-loss test: a terminal's outbox under load.

    Puts data frames for ever; after each ``put`` returns prints ``P <rid>
    <seq>``, and every few frames acknowledges the oldest (as the agent does
    after a PUBACK), printing ``A <rid>`` just before. The parent SIGKILLs it at a
    random moment, usually in the middle of a write.
    """
    from edge.outbox import Outbox

    ob = Outbox(directory, budget=8 * 1024 * 1024, seg_bytes=4096)
    rng = random.Random(first_seq)
    seq = first_seq
    while True:
        rows = [[rng.randrange(10000) for _ in S.CHANNELS] for _ in range(rng.randint(1, 8))]
        rid = ob.put(frames.encode(S.data("F000", 1, seq, S.T0 + 60 * seq, rows)), "data")
        print(f"P {rid} {seq}", flush=True)
        seq += 1
        if seq % 4 == 0:
            done = [r for r, _k, _p in ob.peek(3)]
            for r in done:  # announced before: a kill inside ack() may have taken effect
                print(f"A {r}", flush=True)
            ob.ack(done)
