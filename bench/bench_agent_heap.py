"""The terminal agent's RAM and uplink bytes, measured under real MicroPython.

usage: python bench/bench_agent_heap.py [--cycles N] [--hours H] [--json FILE]

Runs the agent (edge/agent.py) under MicroPython 1.27 (the WebAssembly port
from npm, on Node.js, as tools/mpy_run.mjs does) with the test doubles of
tests/mpy/test_agent_fakes.py: two IM-100 insulation monitors (6 channels)
on an in-process RS-485 line and a scripted MQTT broker that counts the
bytes every packet would take. Time is virtual, so days pass in seconds.

Heap (``gc.mem_alloc()`` after ``gc.collect()``), in bytes:

* ``code``: protocol + edge modules once imported (compiled from source
  here; a board loading .mpy files holds about the same bytecode in RAM);
* ``agent``: what one Agent keeps live after construction, and after
  ``--cycles`` sampling cycles (1 s sampling, one frame per sample: the
  busiest steady state), sampled every 10 % of the run, so growth shows.
  Goal: at most 32 KB, no growth.

Bytes per hour for a terminal with 6 channels sampled every minute (the
default 60 s upload and 300 s heartbeat, and a 5-minute upload for
comparison), over ``--hours`` of virtual time after the connect: MQTT packet
bytes up (PUBLISH with topic and header, PINGREQ) and down (PUBACK,
PINGRESP, the cloud's ack frames, which the scripted broker sends the way
the ingest does), and the frame payload alone. TCP/IP and TLS overhead are not
included (they depend on the link; TLS adds about 29 bytes per record).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

# Definitions run inside MicroPython; the work is then driven call by call
# (see CALLS). The WebAssembly port collects garbage only between two calls
# from JavaScript (gc.collect() inside a call just asks for it: the C stack
# cannot be scanned there), so "live after gc" is read at the start of the
# call after the one that asked for a collection.
MP_SETUP = r"""
import gc, json, sys
sys.path.insert(0, "/repo/tests/mpy")
marks = []
state = {}


def mark():
    # No tag argument: every new string constant in a call would be interned
    # for good (a qstr) and show up as heap growth.
    marks.append(gc.mem_alloc())


def import_all():
    import protocol.cbor, protocol.frames, protocol.topics
    import edge.agent, edge.alarms, edge.bus, edge.clock, edge.config, edge.link
    import edge.inflight, edge.modbus, edge.outbox, edge.profiles, edge.session


def import_fakes():
    import test_agent_fakes


def advance(rig, cap_ms=3600000):
    # jump the virtual clock to the agent's next event instead of idling through
    # it; cap_ms keeps the keepalive pings (due between events) on time
    a = rig.agent
    nxt = min(min(a.dev_next), a.next_status)
    ms = (nxt - a.mono()) * 1000
    rig.link.sleep_ms(min(ms, cap_ms) if ms > 0 else 1)


def make_rig():
    from test_agent_fakes import Rig
    rig = Rig("heap", site_over={"sample": {"interval": 1}},
              cloud={"version": 1, "upload": 0, "heartbeat": 300})
    rig.broker.record = False
    state["rig"] = rig


def boot():
    state["rig"].boot()
    state["rig"].run(1)  # connected, births out


def cycles(n):
    rig = state["rig"]
    a = rig.agent
    done = 0
    while done < n:
        t = a.mono()
        a.step()
        if a.dev_next[0] > t and a.outbox.depth == 0:
            done += 1
            advance(rig)
    state["cycles"] = state.get("cycles", 0) + n


def traffic_start(upload):
    from test_agent_fakes import Rig
    rig = Rig("traffic%d" % upload, site_over={"sample": {"interval": 60}},
              cloud={"version": 1, "upload": upload, "heartbeat": 300})
    rig.broker.record = False
    rig.boot()
    rig.run(2)  # connect, birth, the boot's queued birth
    b = rig.broker
    state["t"] = (rig, upload, rig.agent.mono(), b.bytes_up, b.bytes_down, b.payload_up,
                  b.packets_up)


def traffic_hour():
    rig = state["t"][0]
    end = rig.agent.mono() + 3600
    while rig.agent.mono() < end:
        rig.agent.step()
        if rig.agent.outbox.depth == 0:
            advance(rig, 2000)


def traffic_end():
    rig, upload, t0, up0, down0, pay0, pk0 = state["t"]
    b = rig.broker
    h = (rig.agent.mono() - t0) / 3600
    state.setdefault("traffic", []).append({
        "upload_s": upload, "hours": h,
        "up_per_hour": (b.bytes_up - up0) / h, "down_per_hour": (b.bytes_down - down0) / h,
        "payload_per_hour": (b.payload_up - pay0) / h,
        "packets_per_hour": (b.packets_up - pk0) / h,
        "pings": b.client.pings if b.client else None, "sessions": b.sessions})
    del state["t"]


def report():
    print("RESULT " + json.dumps({"interpreter": sys.version, "marks": marks,
                                  "cycles": state.get("cycles", 0),
                                  "traffic": state.get("traffic", [])}))
"""

JS = r"""
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
// the root comes in the environment: an argument would make the runtime module
// believe it is the main script and start its REPL
const root = process.env.MM_ROOT;
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const mp = await loadMicroPython({ stdout: (l) => process.stdout.write(l + "\n"),
                                   stderr: (l) => process.stderr.write(l + "\n") });
function mkdirs(p) { let cur = ""; for (const part of p.split("/").filter(Boolean)) {
  cur += "/" + part; try { mp.FS.mkdir(cur); } catch (e) {} } }
function copyTree(rel) {
  const src = path.join(root, rel);
  mkdirs("/repo/" + rel);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    if (e.name.startsWith(".") || e.name === "__pycache__") continue;
    const child = rel + "/" + e.name;
    if (e.isDirectory()) copyTree(child);
    else if (/\.(py|json)$/.test(e.name))  // sources and the sensor profiles
      mp.FS.writeFile("/repo/" + child, fs.readFileSync(path.join(root, child)));
  }
}
for (const rel of ["protocol", "edge", "tests/mpy"]) copyTree(rel);
mkdirs("/tmp");
mp.runPython("import os, sys\nos.chdir('/repo')\nsys.path.insert(0, '/repo')\n" + job.setup);
for (const call of job.calls) mp.runPython(call);
"""


def calls(cycles: int, hours: int) -> list[str]:
    """The driving sequence; every ``gc.collect()`` is followed by a new call."""
    # marks: 0 base, 1 code, 2 rig, 3 agent, 4.. every tenth of the cycles
    seq = [
        "gc.collect()",
        "mark()",
        "import_all()",
        "gc.collect()",
        "mark()",
        "import_fakes()",
        "make_rig()",
        "gc.collect()",
        "mark()",
        "boot()",
        "gc.collect()",
        "mark()",
    ]
    chunk = max(1, cycles // 100)
    for k in range(1, 101):
        seq += ["cycles(%d)" % chunk, "gc.collect()"]
        if k % 10 == 0:
            seq.append("mark()")
    for upload in (60, 300):
        seq.append("traffic_start(%d)" % upload)
        seq += ["traffic_hour()", "gc.collect()"] * hours
        seq.append("traffic_end()")
    seq.append("report()")
    return seq


def run(cycles: int, hours: int) -> dict:
    node = shutil.which("node")
    if node is None or not RUNTIME.is_dir():
        sys.exit("error: Node.js and the MicroPython runtime are needed; run 'make deps'")
    job = json.dumps({"setup": MP_SETUP, "calls": calls(cycles, hours)})
    env = dict(os.environ, MM_ROOT=str(ROOT))
    proc = subprocess.run(
        [node, "--input-type=module", "-e", JS],
        input=job,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            m = r["marks"]
            r["code"] = m[1] - m[0]
            r["agent_after_boot"] = m[3] - m[2]
            r["agent_live"] = [x - m[2] for x in m[4:14]]
            return r
    sys.exit("benchmark failed:\n" + proc.stdout[-2000:] + proc.stderr[-4000:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=10000, help="sampling cycles (default 10000)")
    p.add_argument("--hours", type=int, default=24, help="virtual hours of traffic (default 24)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args()
    r = run(args.cycles, args.hours)
    print(json.dumps(r, indent=2))
    live = r["agent_live"]
    print()
    print("| heap (gc.mem_alloc after collect) | bytes |")
    print("|---|---:|")
    print("| protocol + edge modules (bytecode) | %d |" % r["code"])
    print("| one agent after boot | %d |" % r["agent_after_boot"])
    print(
        "| one agent after %d / %d sampling cycles | %d / %d |"
        % (args.cycles // 10, args.cycles, live[0], live[-1])
    )
    print("| growth from 10 %% to 100 %% of the run | %+d |" % (live[-1] - live[0]))
    print()
    print("| 6 channels, 1-min sampling | MQTT up B/h | MQTT down B/h | payload B/h | msgs/h |")
    print("|---|---:|---:|---:|---:|")
    for t in r["traffic"]:
        print(
            "| upload every %d s, heartbeat 300 s | %.0f | %.0f | %.0f | %.1f |"
            % (
                t["upload_s"],
                t["up_per_hour"],
                t["down_per_hour"],
                t["payload_per_hour"],
                t["packets_per_hour"],
            )
        )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
