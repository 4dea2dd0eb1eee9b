"""The terminal agent's RAM and uplink bytes, measured under real MicroPython.

usage: python bench/bench_agent_heap.py [--cycles N] [--hours H] [--modules] [--json FILE]

Builds the device bundle exactly as ``mimamori-install build`` does
(``.mpy`` files from mpy-cross) and loads it into MicroPython 1.27 (the
WebAssembly port from npm, on Node.js, as tools/mpy_run.mjs runs it; a
32-bit port like the ESP32's: ``sys.maxsize`` is 2**31-1, pointers and heap
words are 4 bytes). The bundle's files sit in the interpreter's filesystem
the way the installer flashes them; no device ``.py`` source is there, so
every device module comes from its ``.mpy``. The agent (``edge/agent.py``)
runs with the test doubles of tests/mpy/test_agent_fakes.py: a fake HAL, a
scripted MQTT broker that counts the bytes every packet would take, and
Modbus slaves on an in-process RS-485 line. Time is virtual, so days pass
in seconds.

Heap (``gc.mem_alloc()`` after ``gc.collect()``), in bytes:

* ``code_import``: what ``import edge.agent`` (all ``main.py`` does before
  ``run()``) leaves on the heap: bytecode, qstrs, constants, module dicts;
* ``total``: everything the device side holds (code still loaded + one
  agent's state) after boot and after every tenth of ``--cycles`` sampling
  cycles, with 3 sensors and 18 channels (two power meters and an 8-input
  contact module; 1 s sampling, one frame per sample: the busiest steady
  state). The test doubles' own share is measured and left out.
  Goal: at most 64 KB, growth indistinguishable from noise.
* ``code_resident``: the device modules still loaded once boot is over
  (measured after the agent and the doubles are dropped);
  ``total - code_resident`` is the agent's own state.
* ``--modules``: what each device module adds when imported after its
  dependencies (a fresh interpreter, one import per call), with its qstr
  pool growth, in dependency order.

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
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.installer import bundle  # noqa: E402 (the checkout, not an installed copy)

RUNTIME = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

# Definitions run inside MicroPython; the work is then driven call by call
# (see calls()). The WebAssembly port collects garbage only between two calls
# from JavaScript (gc.collect() inside a call just asks for it: the C stack
# cannot be scanned there), so "live after gc" is read at the start of the
# call after the one that asked for a collection. Importing in the same call
# as the measurement would count the import's garbage too (114,160 bytes for
# edge.agent instead of the 91,000 it keeps).
MP_SETUP = r"""
import gc, json, sys
marks = []
state = {}


def mark():
    # No tag argument: every new string constant in a call would be interned
    # for good (a qstr) and show up as heap growth.
    marks.append(gc.mem_alloc())


def import_agent():
    import edge.agent  # what main.py does


def import_shared():
    # Device modules the agent loads at boot (edge.control imports them for
    # the agent's parts) and the test doubles import too (edge.fakelink needs
    # edge.modbus and edge.link): counted as device code here, so the
    # doubles' share below is theirs alone.
    import edge.alarms, edge.bus, edge.clock, edge.inflight, edge.outbox, edge.session
    import edge.link, edge.modbus, protocol.frames, protocol.topics


def import_fakes():
    # The scripted broker decodes the agent's uplink frames and encodes the
    # cloud's acks, the converters of protocol.cloudfields, which a terminal
    # never imports: the doubles' share.
    import test_agent_fakes, protocol.cloudfields


# Three sensors, 18 channels: two power meters (32-bit registers in both
# word orders) and an 8-input contact module, with an alarm rule on each kind.
PM = {0: 0, 1: 4210, 2: 0x0001, 3: 0x86A0, 4: 2031, 5: 1544, 6: 950}
PM_CDAB = {0: 4210, 1: 0, 2: 0x86A0, 3: 0x0001, 4: 2031, 5: 1544, 6: 950}
WIRING = [
    {"unit": 1, "profile": "PM-300", "name": "pm1"},
    {"unit": 2, "profile": "PM-310", "name": "pm2"},
    {"unit": 3, "profile": "DI-8", "name": "di"},
]
THRESHOLDS = [
    {"channel": "pm1.kw", "cond": "hi", "warn": 80, "alarm": 100, "hyst": 2, "on_delay": 60},
    {"channel": "pm2.v", "cond": "lo", "warn": 190, "alarm": 180},
    {"channel": "di.di1", "cond": "contact", "alarm": 1},
]


class Discard:
    def append(self, line):
        pass


def make_rig():
    from test_agent_fakes import Rig
    from edge.fakelink import FakeSlave
    slaves = (FakeSlave(1, inputs=dict(PM)), FakeSlave(2, inputs=dict(PM_CDAB)),
              FakeSlave(3, discrete={i: i % 2 for i in range(8)}))
    rig = Rig("heap", site_over={"sample": {"interval": 1}, "wiring": WIRING},
              cloud={"version": 1, "upload": 0, "heartbeat": 300, "thresholds": THRESHOLDS},
              slaves=slaves)
    rig.broker.record = False
    rig.log = Discard()  # a board prints its log lines; the rig would keep them
    state["rig"] = rig


def boot():
    state["rig"].boot()
    state["rig"].run(1)  # connected, births out


def config_frame():
    # the cloud changes the heartbeat: the configuration code is loaded,
    # runs and is unloaded again
    rig = state["rig"]
    rig.config(2, upload=0, heartbeat=600, thresholds=THRESHOLDS)
    rig.run(1)


def drop_rig():
    state.clear()


def advance(rig, cap_ms=3600000):
    # jump the virtual clock to the agent's next event instead of idling through
    # it; cap_ms keeps the keepalive pings (due between events) on time
    a = rig.agent
    nxt = min(min(a.dev_next), a.next_status)
    ms = (nxt - a.mono()) * 1000
    rig.link.sleep_ms(min(ms, cap_ms) if ms > 0 else 1)


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
    mods = sorted(k for k in sys.modules if k.split(".")[0] in ("edge", "protocol"))
    files = [getattr(sys.modules[k], "__file__", "") for k in mods]
    print("RESULT " + json.dumps({
        "interpreter": sys.version, "maxsize": sys.maxsize, "marks": marks,
        "cycles": state.get("cycles", 0), "traffic": state.get("traffic", []),
        "modules": mods, "source_files": [f for f in files if not f.endswith(".mpy")]}))
"""

# --modules: one fresh interpreter, each module imported after its dependencies.
MP_MODULES = r"""
import gc, micropython
marks = []


def mark():
    marks.append(gc.mem_alloc())
    micropython.qstr_info()  # one "qstr pool:" line per mark
"""

JS = r"""
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
// paths come in the environment: an argument would make the runtime module
// believe it is the main script and start its REPL
const root = process.env.MM_ROOT;
const flash = process.env.MM_BUNDLE;
const job = JSON.parse(fs.readFileSync(0, "utf8"));
const mp = await loadMicroPython({ stdout: (l) => process.stdout.write(l + "\n"),
                                   stderr: (l) => process.stderr.write(l + "\n") });
function mkdirs(p) { let cur = ""; for (const part of p.split("/").filter(Boolean)) {
  cur += "/" + part; try { mp.FS.mkdir(cur); } catch (e) {} } }
// the bundle as flashed: every file, at the same relative path
function copyTree(src, dst, wanted) {
  mkdirs(dst);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    if (e.name.startsWith(".") || e.name === "__pycache__") continue;
    const from = path.join(src, e.name);
    if (e.isDirectory()) copyTree(from, dst + "/" + e.name, wanted);
    else if (wanted(e.name)) mp.FS.writeFile(dst + "/" + e.name, fs.readFileSync(from));
  }
}
copyTree(flash, "/flash", () => true);
copyTree(path.join(root, "tests", "mpy"), "/tests", (n) => n.endsWith(".py"));
mkdirs("/tmp");
mp.runPython("import os, sys\nos.chdir('/flash')\nsys.path[:0] = ['/flash', '/tests']\n" +
             job.setup);
for (const call of job.calls) mp.runPython(call);
"""


def calls(cycles: int, hours: int) -> list[str]:
    """The driving sequence; every ``gc.collect()`` is followed by a new call."""
    # marks: 0 base, 1 edge.agent imported, 2 + shared modules, 3 + test doubles,
    # 4 + rig, 5 booted, 6..15 every tenth of the cycles, 16 after a config
    # frame, 17 rig dropped
    seq = ["gc.collect()", "mark()"]
    for step in ("import_agent()", "import_shared()", "import_fakes()", "make_rig()", "boot()"):
        seq += [step, "gc.collect()", "mark()"]
    chunk = max(1, cycles // 100)
    for k in range(1, 101):
        seq += ["cycles(%d)" % chunk, "gc.collect()"]
        if k % 10 == 0:
            seq.append("mark()")
    seq += ["config_frame()", "gc.collect()", "mark()", "drop_rig()", "gc.collect()", "mark()"]
    for upload in (60, 300):
        seq.append("traffic_start(%d)" % upload)
        seq += ["traffic_hour()", "gc.collect()"] * hours
        seq.append("traffic_end()")
    seq.append("report()")
    return seq


def node_run(setup: str, seq: list[str], flash: Path) -> str:
    """Run ``setup`` then each call of ``seq`` in one interpreter; its stdout."""
    node = shutil.which("node")
    if node is None or not RUNTIME.is_dir():
        sys.exit("error: Node.js and the MicroPython runtime are needed; run 'make deps'")
    job = json.dumps({"setup": setup, "calls": seq})
    env = dict(os.environ, MM_ROOT=str(ROOT), MM_BUNDLE=str(flash))
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
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        sys.exit("benchmark failed:\n" + proc.stdout[-2000:] + proc.stderr[-4000:])
    return proc.stdout


def build_bundle(out: Path) -> dict:
    """The bundle as ``mimamori-install build`` makes it; its manifest."""
    return bundle.build(out, ROOT)


def run(flash: Path, cycles: int, hours: int) -> dict:
    out = node_run(MP_SETUP, calls(cycles, hours), flash)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[len("RESULT ") :])
            break
    else:
        sys.exit("benchmark failed: no result\n" + out[-2000:])
    if r["source_files"]:
        sys.exit("device modules loaded from source, not .mpy: %s" % r["source_files"])
    m = r["marks"]
    base, doubles = m[0], (m[3] - m[2]) + (m[4] - m[3])
    r["code_import"] = m[1] - base
    r["doubles"] = doubles
    r["total_after_boot"] = m[5] - base - doubles
    r["total_live"] = [x - base - doubles for x in m[6:16]]
    r["total_after_config"] = m[16] - base - doubles
    r["code_resident"] = m[17] - base - (m[3] - m[2])
    r["agent_after_boot"] = r["total_after_boot"] - r["code_resident"]
    return r


def device_modules(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """Device modules the board can import, each with the device modules it
    imports at module level, in an order where dependencies come first."""
    deps: dict[str, list[str]] = {}
    for rel in bundle.device_files(root):
        name = rel[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        if name.startswith("edge.board"):
            continue  # needs machine/network: measured on the virtual board
        tree = ast.parse((root / rel).read_text(encoding="utf-8"))
        found = []
        for node in tree.body:  # module level only: lazy imports are not paid at import
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append(node.module)
                found += [node.module + "." + a.name for a in node.names]
            elif isinstance(node, ast.Import):
                found += [a.name for a in node.names]
        deps[name] = found
    for name, found in deps.items():
        parents = [name.rsplit(".", 1)[0]] if "." in name else []
        deps[name] = sorted({d for d in found + parents if d in deps and d != name})
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order or name in trail:
            return
        for d in deps[name]:
            visit(d, (*trail, name))
        order.append(name)

    for name in sorted(deps):
        visit(name, ())
    return [(name, deps[name]) for name in order]


def run_modules(flash: Path) -> list[dict]:
    mods = device_modules()
    seq = ["gc.collect()", "mark()"]
    for name, _ in mods:
        seq += ["import " + name, "gc.collect()", "mark()"]
    seq.append("print('RESULT', marks)")
    out = node_run(MP_MODULES, seq, flash)
    # "qstr pool: n_pool=.., n_qstr=.., n_str_data_bytes=.., n_total_bytes=.."
    pools = [
        dict(kv.split("=") for kv in line.split(": ", 1)[1].split(", "))
        for line in out.splitlines()
        if line.startswith("qstr pool:")
    ]
    marks = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    rows = []
    for i, (name, _) in enumerate(mods):
        path = flash / name.replace(".", "/")
        path = path / "__init__.mpy" if path.is_dir() else path.with_suffix(".mpy")
        rows.append(
            {
                "module": name,
                "mpy_bytes": path.stat().st_size,
                "heap": marks[i + 1] - marks[i],
                "qstrs": int(pools[i + 1]["n_qstr"]) - int(pools[i]["n_qstr"]),
                "qstr_chars": int(pools[i + 1]["n_str_data_bytes"])
                - int(pools[i]["n_str_data_bytes"]),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=10000, help="sampling cycles (default 10000)")
    p.add_argument("--hours", type=int, default=24, help="virtual hours of traffic (default 24)")
    p.add_argument("--modules", action="store_true", help="also the heap each module adds")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mm-heap-") as tmp:
        flash = Path(tmp) / "bundle"
        manifest = build_bundle(flash)
        r = run(flash, args.cycles, args.hours)
        if args.modules:
            r["per_module"] = run_modules(flash)
    r["bundle"] = {"mpy_cross": manifest["mpy_cross"], "files": len(manifest["files"])}
    print(json.dumps(r, indent=2))
    bits = 32 if r["maxsize"] == 2**31 - 1 else 64
    live = r["total_live"]
    print()
    print("interpreter: %s (%d-bit: sys.maxsize %d)" % (r["interpreter"], bits, r["maxsize"]))
    print("bundle: %s" % manifest["mpy_cross"])
    print()
    print("| heap (gc.mem_alloc after collect), bundle .mpy | bytes |")
    print("|---|---:|")
    print("| `import edge.agent` (code before the agent starts) | %d |" % r["code_import"])
    print("| device modules still loaded after boot | %d |" % r["code_resident"])
    print("| agent state after boot (3 sensors, 18 channels) | %d |" % r["agent_after_boot"])
    print("| **total in use after boot** | %d |" % r["total_after_boot"])
    print(
        "| total after %d / %d sampling cycles | %d / %d |"
        % (args.cycles // 10, args.cycles, live[0], live[-1])
    )
    print("| growth from 10 %% to 100 %% of the run | %+d |" % (live[-1] - live[0]))
    print("| total after a config frame (new heartbeat) | %d |" % r["total_after_config"])
    if args.modules:
        print()
        print("| module (imported after its dependencies) | .mpy bytes | heap | new qstrs |")
        print("|---|---:|---:|---:|")
        for row in r["per_module"]:
            print(
                "| %s | %d | %d | %d |"
                % (row["module"], row["mpy_bytes"], row["heap"], row["qstrs"])
            )
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
