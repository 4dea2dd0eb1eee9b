"""Frames, fleets and a seeded database for the ingest tests and benchmark.

- frame builders (:func:`birth`, :func:`data`, ...) return protocol frame
  dicts for the README's 6-channel terminal;
- :class:`Terminal` plays one terminal: boot and seq counters, a sample
  clock, and the exact raw values it sent, so a test can compare the store
  with what was published;
- :func:`seed` registers customers and contracted terminals (with MQTT
  passwords) in a migrated database;
- :func:`migrated_sqlite` copies a once-migrated template (Alembic takes a
  while; copying a file does not).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy.orm import Session

from cloud import db
from cloud.models import Customer
from cloud.models import Terminal as TerminalRow
from cloud.services.credentials import set_mqtt_password
from protocol import frames, topics
from tests.support.broker import HOST, MosquittoBroker

T0 = 1764201600  # 2025-11-27T00:00:00Z, the README's example time
CHANNELS: list[dict[str, Any]] = [
    {"alias": 0, "name": "io", "unit": "mA", "kind": "leak", "exp": -1},
    {"alias": 1, "name": "ior", "unit": "mA", "kind": "leak", "exp": -1},
    {"alias": 2, "name": "kw", "unit": "kW", "kind": "power", "exp": -2},
    {"alias": 3, "name": "kwh", "unit": "kWh", "kind": "energy", "exp": -1},
    {"alias": 4, "name": "v", "unit": "V", "kind": "voltage", "exp": -1},
    {"alias": 5, "name": "t", "unit": "degC", "kind": "temperature", "exp": -1},
]
NAMES = [c["name"] for c in CHANNELS]
PASSWORD = "pw-{tid}"  # test-only terminal passwords, derived from the id


def at(ts: float) -> datetime:
    """Aware UTC datetime of epoch seconds."""
    return datetime.fromtimestamp(ts, UTC)


def _head(ftype: str, tid: str, boot: int, seq: int, ts: int, *, unsynced: bool) -> dict[str, Any]:
    return {"type": ftype, "tid": tid, "boot": boot, "seq": seq, "ts": ts, "unsynced": unsynced}


def birth(
    tid: str,
    boot: int,
    seq: int,
    ts: int = T0,
    *,
    channels: Sequence[dict[str, Any]] = CHANNELS,
    fw: str = "1.0.0",
    cfg: int = 0,
    unsynced: bool = False,
) -> dict[str, Any]:
    return {
        **_head("birth", tid, boot, seq, ts, unsynced=unsynced),
        "fw": fw,
        "cfg": cfg,
        "channels": [dict(c) for c in channels],
    }


def data(
    tid: str,
    boot: int,
    seq: int,
    ts: int,
    rows: Sequence[Sequence[Any]],
    *,
    dt: int = 60,
    quality: dict[int, list[list[int]]] | None = None,
    unsynced: bool = False,
) -> dict[str, Any]:
    """A data frame: sample k is ``rows[k]`` taken at ``ts + k * dt``."""
    samples = []
    for k, values in enumerate(rows):
        sample: dict[str, Any] = {"dt": 0 if k == 0 else dt, "values": list(values)}
        if quality and k in quality:
            sample["quality"] = quality[k]
        samples.append(sample)
    return {**_head("data", tid, boot, seq, ts, unsynced=unsynced), "samples": samples}


def status(
    tid: str,
    boot: int,
    seq: int,
    ts: int = T0,
    *,
    queued: int = 0,
    dropped: int = 0,
    rssi: int | None = -71,
    errors: dict[str, int] | None = None,
    unsynced: bool = False,
) -> dict[str, Any]:
    return {
        **_head("status", tid, boot, seq, ts, unsynced=unsynced),
        "uptime": 86400,
        "queued": queued,
        "dropped": dropped,
        "rssi": rssi,
        "heap": 48123,
        "errors": dict(errors or {}),
    }


def alarm(
    tid: str,
    boot: int,
    seq: int,
    ts: int = T0,
    *,
    alias: int | None = 1,
    cond: str = "hi",
    level: int = 2,
    state: str = "raised",
    value: Any = 312,
    threshold: Any = 300,
    unsynced: bool = False,
) -> dict[str, Any]:
    return {
        **_head("alarm", tid, boot, seq, ts, unsynced=unsynced),
        "alias": alias,
        "cond": cond,
        "level": level,
        "state": state,
        "value": value,
        "threshold": threshold,
    }


def cfgack(
    tid: str,
    boot: int,
    seq: int,
    *,
    version: int,
    ok: bool = True,
    reason: str | None = None,
    ts: int = T0,
) -> dict[str, Any]:
    return {
        **_head("cfgack", tid, boot, seq, ts, unsynced=False),
        "version": version,
        "ok": ok,
        "reason": reason,
    }


def cmdres(
    tid: str, boot: int, seq: int, *, cmd_id: int, ok: bool = True, result: Any = None, ts: int = T0
) -> dict[str, Any]:
    return {
        **_head("cmdres", tid, boot, seq, ts, unsynced=False),
        "id": cmd_id,
        "ok": ok,
        "result": result,
    }


def death(tid: str, boot: int, seq: int, ts: int = T0) -> dict[str, Any]:
    return _head("death", tid, boot, seq, ts, unsynced=False)


class Terminal:
    """One simulated terminal's uplink: counters, clock and what it sent.

    ``sent[(channel, ts)] = raw`` records every value of every data frame
    built, so tests compare the store against the exact expectation.
    """

    def __init__(
        self, tid: str, boot: int = 1, start: int = T0, interval: int = 60, per_frame: int = 1
    ) -> None:
        self.tid, self.boot, self.seq = tid, boot, 0
        self.clock = start
        self.interval = interval
        self.per_frame = per_frame
        self.sent: dict[tuple[str, int], int] = {}

    def _next_seq(self) -> int:
        seq, self.seq = self.seq, self.seq + 1
        return seq

    def birth(self, ts: int | None = None) -> dict[str, Any]:
        """The next birth, stamped ``ts`` (default: the sample clock)."""
        return birth(self.tid, self.boot, self._next_seq(), self.clock if ts is None else ts)

    def death(self, ts: int | None = None) -> dict[str, Any]:
        return death(self.tid, self.boot, self._next_seq(), self.clock if ts is None else ts)

    def status(self, **kw: Any) -> dict[str, Any]:
        return status(self.tid, self.boot, self._next_seq(), self.clock, **kw)

    def reboot(self) -> None:
        self.boot += 1
        self.seq = 0

    def data(self) -> dict[str, Any]:
        """The next data frame: ``per_frame`` samples of all six channels."""
        ts = self.clock
        rows = []
        for k in range(self.per_frame):
            t = ts + k * self.interval
            base = (t // self.interval) % 1000
            row = [
                base % 50,
                base % 7,
                1000 + base,
                100000 + base,
                1000 + base % 30,
                200 + base % 90,
            ]
            for name, raw in zip(NAMES, row, strict=True):
                self.sent[(name, t)] = raw
            rows.append(row)
        self.clock = ts + self.per_frame * self.interval
        return data(self.tid, self.boot, self._next_seq(), ts, rows, dt=self.interval)


def expected_values(terminals: Iterable[Terminal]) -> dict[tuple[str, str, int], float]:
    """(terminal, channel, ts) -> engineering value of everything sent."""
    exps = {c["name"]: c["exp"] for c in CHANNELS}
    out = {}
    for term in terminals:
        for (name, ts), raw in term.sent.items():
            exp = exps[name]
            out[(term.tid, name, ts)] = raw / 10**-exp if exp < 0 else float(raw * 10**exp)
    return out


def seed(
    session: Session,
    tids: Iterable[str],
    *,
    contract_start: date = date(2025, 1, 1),
    contract_end: date | None = None,
    timezone: str = "Asia/Tokyo",
    with_password: bool = False,
) -> Customer:
    """A customer with contracted terminals ``tids`` (committed)."""
    customer = Customer(name="Test Denki", timezone=timezone)
    session.add(customer)
    session.flush()
    for tid in tids:
        row = TerminalRow(
            id=tid,
            customer_id=customer.id,
            contract_start=contract_start,
            contract_end=contract_end,
            registered_on=contract_start,
        )
        if with_password:
            set_mqtt_password(row, PASSWORD.format(tid=tid))
        session.add(row)
    session.commit()
    return customer


_TEMPLATE: dict[str, Path] = {}


def migrated_sqlite(directory: Path, template_dir: Path) -> str:
    """URL of a fresh migrated SQLite database in ``directory`` (a copy of a
    template migrated once per ``template_dir``)."""
    key = str(template_dir)
    if key not in _TEMPLATE:
        path = template_dir / "template.sqlite3"
        if not path.exists():
            db.upgrade(f"sqlite:///{path}")
        _TEMPLATE[key] = path
    target = directory / "ingest.sqlite3"
    shutil.copy(_TEMPLATE[key], target)
    return f"sqlite:///{target}"


# ----------------------------------------------------------------- MQTT fleet


class Publisher:
    """One terminal's MQTT connection (paho 2, MQTT 5, QoS 1, its own credentials).

    ``publish`` does not wait for each PUBACK (paho keeps the broker's
    receive window full); :meth:`flush` waits until every message was
    acknowledged by the broker, and raises if one was refused or timed out.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tid: str,
        password: str | None = None,
        *,
        listen_acks: bool = False,
    ) -> None:
        self.tid = tid
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=tid, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(tid, password or PASSWORD.format(tid=tid))
        self.client.max_queued_messages_set(0)
        self.infos: list[Any] = []
        # with listen_acks: (boot, seq) of every frame an ack from the cloud named
        self.acked: set[tuple[int, int]] = set()
        self.ack_frames: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self.client.connect(host, port, keepalive=30)
        if listen_acks:
            self.client.on_message = self._on_message
            self.client.on_subscribe = lambda *_a: self._subscribed.set()
            self.client.subscribe(topics.downlink(tid, "ack"), qos=1)
        self.client.loop_start()
        if listen_acks and not self._subscribed.wait(30):
            raise AssertionError(f"{tid}: no SUBACK for its acks")

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        frame = frames.decode(bytes(msg.payload))
        topics.check_frame_topic(msg.topic, frame)
        for first, count in frame["ranges"]:
            self.acked.update((frame["for_boot"], s) for s in range(first, first + count))
        self.ack_frames.append(frame)

    def publish_frame(self, frame: dict[str, Any]) -> None:
        self.publish(topics.uplink(frame["tid"], frame["type"]), frames.encode(frame))

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != 0:
            raise AssertionError(f"{self.tid}: publish failed before sending: {info.rc}")
        self.infos.append(info)

    def flush(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self.infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            if not info.is_published():
                raise AssertionError(f"{self.tid}: no PUBACK for mid {info.mid}")
        self.infos.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


INGEST_PASSWORD = "pw-ingest"  # the ingest service account the broker fixtures create
START_S = 30.0


class IngestProcess:
    """One ``python -m cloud.ingest`` process with a stable client id (its
    persistent session); its counters come from ``--stats-file``."""

    def __init__(
        self,
        broker: MosquittoBroker,
        workdir: Path,
        client_id: str,
        group: str,
        env: dict[str, str],
        *,
        extra: Iterable[str] = (),
    ) -> None:
        self.broker, self.client_id, self.group = broker, client_id, group
        self.dir = workdir / client_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats_file = self.dir / "stats.json"
        self.env = {**os.environ, **env, "MIMAMORI_INGEST_MQTT_PASSWORD": INGEST_PASSWORD}
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[dict[str, Any]] = []  # final stats of earlier runs

    def start(self) -> IngestProcess:
        self.stats_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "cloud.ingest",
            "--host",
            HOST,
            "--port",
            str(self.broker.ports["service"]),
            "--username",
            "ingest",
            "--client-id",
            self.client_id,
            "--group",
            self.group,
            "--stats-file",
            str(self.stats_file),
            "--stats-interval",
            "0.1",
            "--batch-ms",
            "20",
            *self.extra,
        ]
        with (self.dir / "worker.log").open("ab") as log:
            # cwd: a directory without instance/mimamori.toml, so only env counts
            self.proc = subprocess.Popen(
                cmd, cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(
            lambda: self.alive() and (self.stats() or {}).get("subscribed"),
            START_S,
            f"{self.client_id} to subscribe; log:\n{self.log()}",
        )
        return self

    def __enter__(self) -> IngestProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.stop()

    def alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.client_id} exited {self.proc.returncode}:\n{self.log()}")
        return True

    def stats(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return data

    def total(self, key: str) -> int:
        """``key`` summed over this worker's runs (each process counts from 0)."""
        current = self.stats() or {}
        return sum(int(r.get(key, 0)) for r in [*self.runs, current])

    def log(self) -> str:
        path = self.dir / "worker.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.runs.append(self.stats() or {})
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM: finish the batch, disconnect cleanly, exit 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(20) == 0, self.log()

    def forget_session(self) -> None:
        """Delete the worker's persistent session at the broker (test hygiene)."""
        client = self.broker.client(
            "service",
            "ingest",
            INGEST_PASSWORD,
            client_id=self.client_id,
            clean=True,
            session_expiry=0,
        )
        client.connect_ok()
        client.close()
