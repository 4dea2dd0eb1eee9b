"""Ingest throughput: frames/s one worker stores, next to a bare subscriber.

usage: python bench/bench_ingest.py [--terminals N] [--frames N] [--backends sql,influx]
                                    [--batch-size N] [--receive-maximum N]
                                    [--rounds N] [--forwarding] [--no-two-workers]

Prints one JSON object, then a markdown table (the "Ingest" section of
docs/benchmarks.md is built from such tables) with frames/s, the bench
process's CPU time per frame and the servers' (Mosquitto, InfluxDB).

Setup, all real and all on this machine: the project's Mosquitto
(tests/support/broker.py, per-client queues unlimited), a private InfluxDB
1.x (tests/support/influx.py), SQLite files migrated by Alembic. ``N``
terminals, each with its own credentials, publish QoS 1 frames; every data
frame is one sample of six channels (the README's terminal), with a
heartbeat every 60th and an alarm raise/clear pair every 120th frame.

Method: each consumer gets its own persistent session (its own share group)
*before* the stream is published, so the broker holds one identical backlog
per consumer; then the consumers drain their backlog one after the other and
the rate is frames / (last frame done - connect). On a shared VM the speed
of the same code swings by a third within seconds, so this runs in
``--rounds`` rounds (3 by default): each round drains a bare subscriber and
then every ingest consumer, each ingest rate is compared with its own
round's bare rate, and the table shows medians:

- ``bare subscriber``: paho-mqtt 2, MQTT 5, QoS 1 with paho's automatic
  PUBACK, counting messages and nothing else;
- ``ingest (sql)`` / ``ingest (influx)``: the product's worker as
  ``python -m cloud.ingest`` runs it: :class:`cloud.ingest.worker.IngestWorker`
  receiving, and its writer process (:mod:`cloud.ingest.writer`) running
  the service with the real alarm engine as its hook (forwarding only with
  ``--forwarding``: it looks up endpoints per terminal and batch), writing SQLite
  (relational) plus the SQL or InfluxDB time-series backend, acknowledging
  after commit. Each terminal's birth is processed before the clock starts
  (births happen once per connection, not per frame);
- ``ingest (sql, in one process)``: the same, with the service in the
  receiving process (``--single-process``): what the writer process buys;
- ``ingest (..., 2 workers)``: two such workers sharing one subscription
  (the broker splits the backlog between their sessions);
- ``service only (sql)``: the same stream handed to ``IngestService.process``
  in batches, without MQTT, to show what the broker round trip costs.

CPU µs/frame counts the bench process and the writer processes; servers'
CPU µs/frame the broker and InfluxDB.

Afterwards every ingest run is checked: receipts and stored samples must
equal what was published.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud import db
from cloud.broker import account_from_row
from cloud.config import Settings
from cloud.ingest.counters import Counters
from cloud.ingest.hooks import default_hooks
from cloud.ingest.service import BatchProcessor, Inbound, IngestService
from cloud.ingest.worker import IngestWorker, WorkerOptions
from cloud.ingest.writer import RemoteService, service_from_settings
from cloud.models import FrameReceipt
from cloud.timeseries import SqlStore, TimeSeriesStore
from protocol import frames, topics
from protocol.topics import shared_uplink_filter
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.influx import InfluxServer

INGEST_PASSWORD = "bench-ingest"  # noqa: S105
SESSION_EXPIRY = 3600
DRAIN_TIMEOUT = 600.0


def build_stream(
    tids: list[str], per_terminal: int
) -> tuple[list[S.Terminal], list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """Terminals, their births, and per terminal the timed frames."""
    terminals = [S.Terminal(t, boot=1, start=S.T0 + i % 60) for i, t in enumerate(tids)]
    births = [t.birth() for t in terminals]
    streams: list[list[dict[str, Any]]] = []
    for t in terminals:
        fs: list[dict[str, Any]] = []
        for k in range(per_terminal):
            if k % 120 == 60:
                fs.append(
                    S.alarm(
                        t.tid,
                        t.boot,
                        t._next_seq(),
                        t.clock,
                        alias=1,
                        cond="hi",
                        level=2,
                        state="raised" if k % 240 == 60 else "cleared",
                    )
                )
            elif k % 60 == 30:
                fs.append(t.status())
            else:
                fs.append(t.data())
        streams.append(fs)
    return terminals, births, streams


def make_session(port: int, client_id: str, group: str, receive_maximum: int) -> None:
    """Create a persistent session subscribed to the uplink in ``group``, then leave."""
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set("ingest", INGEST_PASSWORD)
    client.on_connect = lambda c, *_: c.subscribe(shared_uplink_filter(group), qos=1)
    client.on_subscribe = lambda *_: done.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY
    props.ReceiveMaximum = receive_maximum
    client.connect(HOST, port, 30, clean_start=True, properties=props)
    client.loop_start()
    if not done.wait(10):
        raise RuntimeError(f"{client_id}: no SUBACK")
    client.disconnect()
    client.loop_stop()


def publish_all(port: int, streams: list[list[dict[str, Any]]], threads: int = 4) -> float:
    """Publish every terminal's frames (own connection each); return frames/s."""
    payloads = [
        [(topics.uplink(f["tid"], f["type"]), frames.encode(f)) for f in fs] for fs in streams
    ]

    def run(part: list[list[tuple[str, bytes]]]) -> None:
        for msgs in part:
            pub = S.Publisher(HOST, port, msgs[0][0].split("/")[2])
            try:
                for topic, payload in msgs:
                    pub.publish(topic, payload)
                pub.flush(DRAIN_TIMEOUT)
            finally:
                pub.close()

    t0 = time.perf_counter()
    workers = [threading.Thread(target=run, args=(payloads[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(len(p) for p in payloads) / (time.perf_counter() - t0)


def drain_bare(
    port: int, client_id: str, total: int, receive_maximum: int, servers: list[int]
) -> tuple[float, float, float]:
    """Drain the backlog; return frames/s, CPU microseconds per frame of this
    process and of the ``servers`` processes."""
    count = 0
    done = threading.Event()

    def on_message(*_: Any) -> None:
        nonlocal count
        count += 1
        if count >= total:
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set("ingest", INGEST_PASSWORD)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY
    props.ReceiveMaximum = receive_maximum
    t0, c0 = time.perf_counter(), time.process_time()
    s0 = sum(proc_cpu_s(pid) for pid in servers)
    client.connect(HOST, port, 30, clean_start=False, properties=props)
    client.loop_start()
    if not done.wait(DRAIN_TIMEOUT):
        raise RuntimeError(f"bare subscriber got {count} of {total}")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    server_cpu = sum(proc_cpu_s(pid) for pid in servers) - s0
    client.disconnect()
    client.loop_stop()
    return total / elapsed, cpu * 1e6 / total, server_cpu * 1e6 / total


def fresh_db(workdir: Path, name: str, tids: list[str]) -> str:
    directory = workdir / name
    directory.mkdir()
    url = S.migrated_sqlite(directory, workdir)
    engine = db.make_engine(url)
    with db.session_factory(engine)() as s:
        S.seed(s, tids)
    engine.dispose()
    return url


def warm_service(
    url: str, store: TimeSeriesStore, births: list[dict[str, Any]], forwarding: bool = False
) -> IngestService:
    engine = db.make_engine(url)
    hooks = default_hooks(forwarding=forwarding)
    service = IngestService(db.session_factory(engine), store, hooks)
    now = S.at(S.T0)
    for i in range(0, len(births), 500):
        service.process([Inbound.of_frame(b, now) for b in births[i : i + 500]])
    return service


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_workers(
    services: list[BatchProcessor],
    port: int,
    client_id: str,
    group: str,
    *,
    total: int,
    batch_size: int,
    receive_maximum: int,
    servers: list[int],
) -> tuple[float, dict[str, Any], float, float]:
    """Drain the backlog with one worker per service (client ids ``<client_id>-<i>``);
    return frames/s, the summed counters, CPU µs per frame of this process
    plus any writer processes, and CPU µs per frame of the ``servers``."""
    counters = [Counters() for _ in services]
    workers = [
        IngestWorker(
            service,
            WorkerOptions(
                host=HOST,
                port=port,
                username="ingest",
                password=INGEST_PASSWORD,
                client_id=f"{client_id}-{i}",
                group=group,
                batch_size=batch_size,
                receive_maximum=receive_maximum,
                session_expiry_s=SESSION_EXPIRY,
                stats_interval_s=3600,
            ),
            c,
        )
        for i, (service, c) in enumerate(zip(services, counters, strict=True))
    ]
    writers = [s.pid for s in services if isinstance(s, RemoteService) and s.pid]
    t0, c0 = time.perf_counter(), time.process_time()
    w0 = sum(proc_cpu_s(pid) for pid in writers)
    s0 = sum(proc_cpu_s(pid) for pid in servers)
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    deadline = t0 + DRAIN_TIMEOUT

    def done() -> int:
        return sum(c.decided for c in counters)

    while done() < total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{client_id}: only {done()} of {total}")
        time.sleep(0.01)  # +-10 ms on a run of seconds; polling faster steals the GIL
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    cpu += sum(proc_cpu_s(pid) for pid in writers) - w0
    server_cpu = sum(proc_cpu_s(pid) for pid in servers) - s0
    for w in workers:
        w.stop()
    for t in threads:
        t.join()
    summed: dict[str, Any] = {}
    for c in counters:
        for k, v in c.snapshot().items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                summed[k] = summed.get(k, 0) + v
    return total / elapsed, summed, cpu * 1e6 / total, server_cpu * 1e6 / total


def service_only(
    url: str,
    store: TimeSeriesStore,
    births: list[dict[str, Any]],
    streams: list[list[dict[str, Any]]],
    batch_size: int,
) -> tuple[float, float]:
    """Frames/s and CPU µs per frame of ``IngestService.process`` alone."""
    service = warm_service(url, store, births)
    now = S.at(S.T0 + 60)
    msgs = [
        Inbound.of_frame(f, now)
        for k in range(max(map(len, streams)))
        for fs in streams
        if k < len(fs)
        for f in [fs[k]]
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(msgs), batch_size):
        service.process(msgs[i : i + batch_size])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return len(msgs) / elapsed, cpu * 1e6 / len(msgs)


def check(url: str, store: TimeSeriesStore, terminals: list[S.Terminal], total: int) -> None:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        receipts = conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt))
    engine.dispose()
    if receipts != total:
        raise RuntimeError(f"{url}: {receipts} receipts, expected {total}")
    got = {p.key: p.value for p in store.iter_points() if not p.channel.startswith("$")}
    if got != S.expected_values(terminals):
        raise RuntimeError(f"{url}: stored samples differ from what was published")


def run(args: argparse.Namespace) -> dict[str, Any]:
    backends = args.backends.split(",")
    tids = [f"B{i:05d}" for i in range(args.terminals)]
    terminals, births, streams = build_stream(tids, args.frames)
    timed = sum(len(fs) for fs in streams)
    data_frames = sum(1 for fs in streams for f in fs if f["type"] == "data")
    accounts = [account_from_row("ingest", INGEST_PASSWORD, "ingest")]
    accounts += [account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in tids]
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "sqlalchemy": importlib.metadata.version("sqlalchemy"),
        "terminals": args.terminals,
        "frames": timed,
        "data_frames": data_frames,
        "samples": data_frames * len(S.CHANNELS),
        "batch_size": args.batch_size,
        "receive_maximum": args.receive_maximum,
        "forwarding_hook": args.forwarding,
        "rounds_run": args.rounds,
        "rates": {},
        "cpu_us_per_frame": {},
    }
    result["server_cpu_us_per_frame"] = {}
    rates: dict[str, float] = result["rates"]
    cpu: dict[str, float] = result["cpu_us_per_frame"]
    server_cpu: dict[str, float] = result["server_cpu_us_per_frame"]
    # name -> one figure per round: rate, CPU, servers' CPU, ratio to that round's bare rate
    rounds: dict[str, list[tuple[float, float, float, float]]] = {}
    # (name, backend, workers, writer process): the product's default first.
    runs = [(f"ingest ({b})", b, 1, True) for b in backends]
    if "sql" in backends:
        runs.append(("ingest (sql, in one process)", "sql", 1, False))
    if args.two_workers:
        runs += [(f"ingest ({b}, 2 workers)", b, 2, True) for b in backends]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        influx = InfluxServer().start() if "influx" in backends else None
        try:
            with MosquittoBroker(
                workdir / "broker", accounts, max_queued_messages=0, max_queued_bytes=0
            ) as broker:
                port_s, port_t = broker.ports["service"], broker.ports["terminal"]
                servers = [broker.pid] + ([influx.proc.pid] if influx and influx.proc else [])
                for r in range(args.rounds):
                    make_session(port_s, f"bench-bare-{r}", f"bare{r}", args.receive_maximum)
                    for k, (_name, _b, n, _r) in enumerate(runs):
                        for i in range(n):  # a shared group splits the backlog between them
                            make_session(
                                port_s, f"bench-{r}-{k}-{i}", f"g{r}x{k}", args.receive_maximum
                            )
                result["publish_rate"] = round(publish_all(port_t, streams))
                for r in range(args.rounds):
                    bare_rate, bare_cpu, bare_servers = drain_bare(
                        port_s, f"bench-bare-{r}", timed, args.receive_maximum, servers
                    )
                    rounds.setdefault("bare subscriber", []).append(
                        (bare_rate, bare_cpu, bare_servers, 1.0)
                    )
                    for k, (name, backend, n, remote) in enumerate(runs):
                        rate, snap, run_cpu, run_servers = drain_one(
                            args,
                            workdir,
                            influx,
                            tag=f"{r}-{k}",
                            n=n,
                            backend=backend,
                            remote=remote,
                            stream=(terminals, births, tids, timed),
                            port=port_s,
                            servers=servers,
                        )
                        rounds.setdefault(name, []).append(
                            (rate, run_cpu, run_servers, rate / bare_rate)
                        )
                        result[f"counters ({name})"] = snap
            if "sql" in backends:
                url = fresh_db(workdir, "service-only", tids)
                rate, service_cpu = service_only(
                    url, SqlStore(db.make_engine(url)), births, streams, args.batch_size
                )
                rounds["service only (sql)"] = [(rate, service_cpu, math.nan, math.nan)]
        finally:
            if influx is not None:
                influx.stop()
    ratios: dict[str, float] = {}
    for name, figures in rounds.items():
        rates[name] = round(statistics.median(f[0] for f in figures))
        cpu[name] = statistics.median(f[1] for f in figures)
        if not math.isnan(figures[0][2]):  # not measured for the service alone
            server_cpu[name] = statistics.median(f[2] for f in figures)
            ratios[name] = statistics.median(f[3] for f in figures)
    result["rounds"] = {
        name: [{"rate": round(f[0]), "ratio_to_bare": round(f[3], 3)} for f in figures]
        for name, figures in rounds.items()
        if name in ratios
    }
    result["cpu_us_per_frame"] = {k: round(v, 1) for k, v in cpu.items()}
    result["server_cpu_us_per_frame"] = {k: round(v, 1) for k, v in server_cpu.items()}
    result["ratio_to_bare"] = {k: round(v, 2) for k, v in ratios.items() if k.startswith("ingest")}
    return result


def drain_one(
    args: argparse.Namespace,
    workdir: Path,
    influx: InfluxServer | None,
    *,
    tag: str,
    n: int,
    backend: str,
    remote: bool,
    stream: tuple[list[S.Terminal], list[dict[str, Any]], list[str], int],
    port: int,
    servers: list[int],
) -> tuple[float, dict[str, Any], float, float]:
    """One ingest consumer (``n`` workers) drains its backlog into a fresh
    database; checked afterwards. Returns what :func:`drain_workers` does."""
    terminals, births, tids, timed = stream
    url = fresh_db(workdir, f"run{tag}", tids)
    settings = Settings(database_url=url)
    store: TimeSeriesStore
    if backend == "influx":
        assert influx is not None
        store = influx.store("bench")
        settings = Settings(
            database_url=url,
            timeseries_backend="influx",
            influx_url=influx.url,
            influx_database=store.database,
        )
    else:
        store = SqlStore(db.make_engine(url))
    local = warm_service(url, store, births, args.forwarding)
    services: list[BatchProcessor] = (
        [
            RemoteService(
                functools.partial(service_from_settings, settings, None, True, args.forwarding)
            )
            for _ in range(n)
        ]
        if remote
        else [local]
    )
    try:
        figures = drain_workers(
            services,
            port,
            f"bench-{tag}",
            f"g{tag.replace('-', 'x')}",
            total=timed,
            batch_size=args.batch_size,
            receive_maximum=args.receive_maximum,
            servers=servers,
        )
    finally:
        for service in services:
            if isinstance(service, RemoteService):
                service.close()
    check(url, store, terminals, timed + len(births))
    return figures


def table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['terminals']} terminals, {r['frames']} frames ({r['data_frames']} data frames of "
        f"one 6-channel sample, the rest heartbeats and alarms), batch {r['batch_size']}, "
        f"receive maximum {r['receive_maximum']}:",
        "",
        "| consumer | frames/s | of bare subscriber | CPU µs/frame | servers' CPU µs/frame |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate in r["rates"].items():
        cpu = r["cpu_us_per_frame"][name]
        servers = r["server_cpu_us_per_frame"].get(name)
        shown = "" if servers is None else f"{servers:.0f}"
        ratio = 1.0 if name == "bare subscriber" else r["ratio_to_bare"].get(name)
        of_bare = "" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {name} | {rate:,} | {of_bare} | {cpu:.0f} | {shown} |")
    lines.append("")
    if r["rounds_run"] > 1:
        lines.append(
            f"Medians of {r['rounds_run']} rounds; each round drains the bare subscriber, "
            'then each ingest consumer, and "of bare subscriber" compares with that '
            "round's bare rate."
        )
    lines.append(f"Publishing the backlog ran at {r['publish_rate']:,} frames/s.")
    lines.append(
        "CPU µs/frame: CPU time of the bench process (every thread) and of the "
        "writer processes while that consumer drained, per frame; servers' CPU "
        "µs/frame: the same for Mosquitto and (when it runs) InfluxDB."
    )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--terminals", type=int, default=20)
    parser.add_argument("--frames", type=int, default=4000, help="timed frames per terminal")
    parser.add_argument("--backends", default="sql,influx")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="drain every consumer this many times, alternating, and report medians",
    )
    parser.add_argument(
        "--forwarding", action="store_true", help="also run the forwarding hook (no endpoints)"
    )
    parser.add_argument(
        "--no-two-workers",
        dest="two_workers",
        action="store_false",
        help="skip the runs with two workers sharing the subscription",
    )
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
