"""How many virtual terminals one core sustains at a 10-second sampling interval.

usage: python bench/bench_fleet.py [--sizes 250,500,1000,...] [--window S] [--upload S]
                                   [--interval S] [--step-ms MS]

Prints one JSON line per fleet size, then a markdown table.

Setup, all real and on this machine: the project's Mosquitto
(tests/support/broker.py, plain terminal listener, per-terminal accounts),
and ONE fleet worker process (``firmware_sim.fleet.worker_main``, the code
``python -m firmware_sim fleet`` runs), so the fleet gets one core. Each
terminal is the real agent with four simulated devices in process
(IM-100, PM-300, TH-10, DI-8: 18 channels), 10-second sampling, data frames
every ``--upload`` seconds (60, the field setting; 0 publishes every sample).

Method: for each size N, the worker boots N terminals spread over the
upload period (at least 10 s; a real fleet never uploads in lockstep), and
after a further 20 s of settling the window starts. Over the window we
measure the worker's CPU share (process time / wall time), Modbus polls
done against polls due (N x 4 devices x window / interval), and the worst
step lag (how late a terminal's step ran after it was due), per second.
N is *sustained* when polls done >= 97 % of due, the 95th percentile of
the per-second worst lag stays under 1 s and every terminal is connected.
The ramp stops at the first size that fails.

Acks: terminals keep every frame until the cloud's ``ack`` names it, with
at most 32 in flight and a resend of everything unacked after 60 s without
an ack (``edge/inflight.py``). There is no ingest here, so :class:`Acker`
plays its acknowledgements from THIS process (never the worker's: the
worker's CPU is the figure): an ``ingest``-role account on the service
listener, subscribed to ``mm/v1/+/up/#`` at QoS 1, acks each frame as it
arrives through the ingest's own :class:`cloud.ingest.acks.AckSender`
(head read with ``protocol.frames.head``, death frames and frames naming
another terminal not acked, QoS 0). Nothing is stored, so it stands for an
ingest that never falls behind; the terminals' cost of receiving and
applying acks is in the figure, as in the field. Reported beside the
sustain criteria: frames acked per second over the window, the outbox
depth summed over terminals at the window's end (stays small while acks
keep up; grows if they do not), and ack frames the acker failed to send.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud.broker import account_from_row
from firmware_sim.fleet import WorkerSpec, raise_fd_limit, worker_main
from firmware_sim.scenario import parse
from protocol import topics
from tests.support.broker import MosquittoBroker

DEVICES = [
    {"kind": "insulation", "unit": 1, "name": "leak"},
    {"kind": "meter", "unit": 2, "name": "power"},
    {"kind": "thermo", "unit": 3, "name": "room"},
    {"kind": "di", "unit": 4, "name": "di"},
]
MIN_RAMP_S = 10.0
SETTLE_S = 20.0
PASSWORD = "bench-secret"  # noqa: S105
ACKER_USER = "bench-ingest"
ACKER_PASSWORD = "bench-ingest-secret"  # noqa: S105
ACKER_TIMEOUT = 15.0  # CONNACK + SUBACK on loopback


class Acker:
    """Acknowledges every uplink frame as it arrives, as an ingest that never falls behind.

    Runs paho-mqtt's network thread in the calling process; ``start()``
    connects to ``host:port`` (the service listener) as ``user`` (an
    ``ingest``-role account, the only role the ACL lets publish
    ``mm/v1/<tid>/down/ack``) and subscribes to ``topics.UPLINK_FILTER`` at
    QoS 1, re-subscribing after any reconnect (paho reconnects by itself;
    frames that arrived meanwhile are resent by their terminals after the ack
    timeout). ``start()`` raises RuntimeError when the login or the
    subscription is refused or does not come within ``ACKER_TIMEOUT``.
    Each message goes through :class:`cloud.ingest.acks.AckSender` as a
    one-frame batch with a final outcome, so what is acked, and how, is the
    ingest's code; ``counters`` (:class:`cloud.ingest.counters.Counters`)
    counts ``received``, ``acked_frames`` and ``ack_failures``.
    """

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        # Imported here, not at the top: the spawned worker re-imports this
        # module as __mp_main__, and the ingest's imports (SQLAlchemy...) would
        # add some 25 MB to the worker RSS this bench reports.
        from cloud.ingest.acks import AckSender  # noqa: PLC0415
        from cloud.ingest.counters import Counters  # noqa: PLC0415
        from cloud.ingest.service import STORED, Inbound, Outcome  # noqa: PLC0415

        self.host, self.port = host, port
        self.counters = Counters()
        self._inbound = Inbound
        self._stored = Outcome(STORED)  # the outcome an ingest gives a frame it wrote
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-acker",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.sender = AckSender(self.client, self.counters)
        self._subscribed = threading.Event()
        self._refused: str | None = None

    def start(self) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(ACKER_TIMEOUT) or self._refused:
            self.stop()
            raise RuntimeError(
                "acker not subscribed to %s: %s"
                % (topics.UPLINK_FILTER, self._refused or "timed out")
            )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self._refused = "connect refused: %s" % rc
            self._subscribed.set()
            return
        client.subscribe(topics.UPLINK_FILTER, qos=1)

    def _on_subscribe(
        self, client: Any, userdata: Any, mid: int, codes: list[Any], props: Any
    ) -> None:
        if any(c.is_failure for c in codes):
            self._refused = "subscription refused: %s" % codes
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.counters.count_received()
        inbound = self._inbound(msg.topic, bytes(msg.payload), datetime.now(UTC))
        self.sender.send([inbound], [self._stored])  # "stored" at once


def scenario(n: int, interval: int, upload: int) -> Any:
    return parse(
        {
            "name": "bench",
            "terminals": n,
            "prefix": "BF",
            "site": {"sample": {"interval": interval}},
            "cloud": {
                "upload": upload,
                "heartbeat": 300,
                "thresholds": [{"channel": "leak.ior", "cond": "leak", "warn": 30, "alarm": 50}],
            },
            "device": DEVICES,
        }
    )


def run_size(
    broker: MosquittoBroker, acker: Acker, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    sc = scenario(n, args.interval, args.upload)
    ramp = max(MIN_RAMP_S, float(args.upload))
    total = ramp + SETTLE_S + args.window
    spec = WorkerSpec(
        0,
        sc,
        list(range(1, n + 1)),
        n,
        broker={"host": "127.0.0.1", "port": broker.ports["terminal"], "tls": False},
        passwords={sc.tid(i): PASSWORD for i in range(1, n + 1)},
        state_dir=str(workdir / ("n%d" % n)),
        t0=time.time(),
        step_ms=args.step_ms,
        ramp_s=ramp,
        duration=total,
    )
    Path(spec.state_dir).mkdir(parents=True)
    ctx = multiprocessing.get_context("spawn")
    reports = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=worker_main, args=(spec, reports, stop), daemon=True)
    proc.start()
    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + total + 120
    while True:
        try:
            stats = reports.get(timeout=1)
        except queue.Empty:
            if time.monotonic() > deadline or not proc.is_alive():
                break
            continue
        stats["acked"] = acker.counters.acked_frames  # as of this report's arrival
        stats["ack_failures"] = acker.counters.ack_failures
        samples.append(stats)
        if stats.get("final"):
            break
    stop.set()
    proc.join(60)
    window = [s for s in samples if s["elapsed"] >= ramp + SETTLE_S and not s.get("final")]
    if len(window) < 2:
        return {"terminals": n, "ok": False, "error": "worker gave no statistics"}
    first, last = window[0], window[-1]
    wall = last["elapsed"] - first["elapsed"]
    polls = last["modbus"] - first["modbus"]
    due = n * len(DEVICES) * wall / args.interval
    lags = sorted(s["lag_max"] for s in window)
    p95 = lags[int(0.95 * (len(lags) - 1))]
    cpu = (last["cpu"] - first["cpu"]) / wall
    up = min(s["up"] for s in window)
    ok = polls >= 0.97 * due and p95 < 1.0 and up == n
    return {
        "terminals": n,
        "ok": ok,
        "window_s": round(wall, 1),
        "cpu_share": round(cpu, 3),
        "polls_done_per_due": round(polls / due, 3),
        "lag_p95_ms": round(1000 * p95),
        "lag_max_ms": round(1000 * lags[-1]),
        "connected_min": up,
        "frames_per_s": round((last["sent"] - first["sent"]) / wall, 1),
        "acked_per_s": round((last["acked"] - first["acked"]) / wall, 1),
        "outbox_end": last["queued"],
        "ack_failures": last["ack_failures"] - first["ack_failures"],
        "steps_per_s": round((last["steps"] - first["steps"]) / wall),
        "rss_mb": round(last["rss_kb"] / 1024),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,2000,3000,4000,6000,8000")
    p.add_argument("--window", type=float, default=60.0, help="seconds measured per size")
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--upload", type=int, default=60)
    p.add_argument("--step-ms", type=int, default=500)
    args = p.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    raise_fd_limit()  # mosquitto inherits it: one connection per terminal
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        secret_hash = account_from_row("x", PASSWORD, "terminal", iterations=101).password_hash
        accounts = [
            account_from_row("BF%04d" % i, secret_hash, "terminal")
            for i in range(1, max(sizes) + 1)
        ]
        accounts.append(account_from_row(ACKER_USER, ACKER_PASSWORD, "ingest", iterations=101))
        with MosquittoBroker(work / "mqtt", accounts) as broker:
            acker = Acker("127.0.0.1", broker.ports["service"], ACKER_USER, ACKER_PASSWORD)
            acker.start()
            try:
                for n in sizes:
                    r = run_size(broker, acker, n, args, work)
                    print(json.dumps(r), flush=True)
                    results.append(r)
                    if not r["ok"]:
                        break
            finally:
                acker.stop()
    best = max((r["terminals"] for r in results if r["ok"]), default=0)
    print()
    print(
        "| terminals | sustained | CPU share of one core | polls done / due | "
        "step lag p95 | worst lag | frames/s | acked/s | outbox at end | worker RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print("| %d | no | %s | | | | | | | |" % (r["terminals"], r["error"]))
            continue
        print(
            "| %d | %s | %.2f | %.3f | %d ms | %d ms | %.1f | %.1f | %d | %d MB |"
            % (
                r["terminals"],
                "yes" if r["ok"] else "no",
                r["cpu_share"],
                r["polls_done_per_due"],
                r["lag_p95_ms"],
                r["lag_max_ms"],
                r["frames_per_s"],
                r["acked_per_s"],
                r["outbox_end"],
                r["rss_mb"],
            )
        )
    print()
    print(
        "sustained at %d-second sampling, upload %d s, one worker process: %d terminals"
        % (args.interval, args.upload, best)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
