"""Signature verification of an update on the virtual board: time and heap.

usage: python bench/bench_ota.py [--runs N] [--json FILE]

Builds the device bundle (``mimamori-install build``), puts its compiled
``edge/ed25519.mpy`` on a virtual board (tests/support/virtual_board.py: the
MicroPython 1.27 WebAssembly port on Node.js, a 32-bit port like the
ESP32's) and, through its REPL, measures what a terminal pays once per
update to check the operator's signature on a bundle's manifest
(edge/ota.py): the message is the context string and the manifest's
SHA-256, as in docs/ota.md.

Figures (bytes of ``gc.mem_alloc()`` after ``gc.collect()``; ms of
``time.ticks_ms``):

* ``code``: what importing the verifier leaves on the heap (freed again when
  the update ends: the agent drops the module);
* ``garbage``: everything one verification allocates with the collector
  off: short-lived big integers (255-510 bits); what stays live at any
  moment is a few dozen of them (four points of four coordinates, two
  scalars), a few KB;
* ``verify_ms``: one verification, median of ``--runs``; ``tight_ms`` the
  same with the collector forced every 2 KB of allocation (``gc.threshold``),
  as on a board whose free heap is small.

The WebAssembly interpreter on this machine's CPU is faster than an ESP32
at 240 MHz; docs/benchmarks.md says by how much the same bytecode differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nacl.signing import SigningKey

from edge.installer import bundle
from edge.installer.board import Board
from protocol.ota import signed_message
from tests.support.virtual_board import VirtualBoard

CODE = """
import gc, time, sys
sys.path.insert(0, '/b')
gc.collect()
a0 = gc.mem_alloc()
from edge import ed25519
gc.collect()
code = gc.mem_alloc() - a0
pub = bytes.fromhex('{pub}')
msg = bytes.fromhex('{msg}')
sig = bytes.fromhex('{sig}')
gc.collect()
gc.disable()
g0 = gc.mem_alloc()
ok = ed25519.verify(pub, msg, sig)
garbage = gc.mem_alloc() - g0
gc.enable()
times = []
for _ in range({runs}):
    gc.collect()
    t0 = time.ticks_ms()
    ok = ok and ed25519.verify(pub, msg, sig)
    times.append(time.ticks_diff(time.ticks_ms(), t0))
gc.threshold(2048)
gc.collect()
t0 = time.ticks_ms()
ok = ok and ed25519.verify(pub, msg, sig)
tight = time.ticks_diff(time.ticks_ms(), t0)
gc.threshold(-1)
print('RESULT', ok, code, garbage, tight, ' '.join(str(t) for t in times))
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    key = SigningKey(hashlib.sha256(b"bench key").digest())
    manifest = b'{"files": {}}\n' * 300  # the size of a real manifest (about 5 KB)
    msg = signed_message(hashlib.sha256(manifest).digest())
    sig = key.sign(msg).signature
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        bundle.build(out)
        with VirtualBoard(Path(tmp) / "flash", run_main=False) as board, Board(board.port) as b:
            for rel in ("edge/__init__.mpy", "edge/ed25519.mpy"):
                b.makedirs("b/edge")
                b.write("b/" + rel, (out / rel).read_bytes())
            text = b.exec(
                CODE.format(
                    pub=key.verify_key.encode().hex(), msg=msg.hex(), sig=sig.hex(), runs=args.runs
                )
            )
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT"))
    _, ok, code, garbage, tight, *times = line.split()
    ms = [int(t) for t in times]
    result = {
        "ok": ok == "True",
        "code": int(code),
        "garbage": int(garbage),
        "tight_ms": int(tight),
        "verify_ms_median": statistics.median(ms),
        "verify_ms": ms,
    }
    print("signature verification on the virtual board (MicroPython 1.27, WebAssembly)")
    print("  valid signature accepted:        %s" % result["ok"])
    print("  verifier code on the heap:       %6d bytes" % result["code"])
    print("  allocated by one verification:   %6d bytes (collector off)" % result["garbage"])
    print(
        "  one verification:                %6d ms (median of %d: %s)"
        % (result["verify_ms_median"], len(ms), ms)
    )
    print("  with a collection every 2 KB:    %6d ms" % result["tight_ms"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
