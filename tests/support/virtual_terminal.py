"""Test helpers for virtual terminals (``python -m edge.host``).

:class:`TerminalProcess` runs the real agent on the host HAL as a child
process (stopped on exit, its output kept in a log file); :class:`Uplink`
collects what a cloud-side subscriber receives, decoded the way the cloud
decodes it (``cloud.codec.decode_frame`` + topic check), so tests wait for
frames with deadlines instead of sleeping.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloud.codec import decode_frame
from cloud.ingest.acks import ack_frames
from protocol import frames, topics
from protocol.errors import ProtocolError
from tests.support.broker import Client

REPO = Path(__file__).resolve().parents[2]


def site_for(
    tid: str, port: int, *, wiring: list[dict[str, Any]], tls: bool = False, **extra: Any
) -> dict[str, Any]:
    """A site part for terminal ``tid`` on the test broker at 127.0.0.1:``port``."""
    site = {
        "terminal_id": tid,
        "broker": {"host": "127.0.0.1", "port": port, "tls": tls},
        "credentials": {"username": tid, "password": password(tid)},
        "wiring": wiring,
    }
    site.update(extra)
    return site


def password(tid: str) -> str:
    return "pw-" + tid


class TerminalProcess:
    """One virtual terminal; ``with TerminalProcess(...) as vt:``.

    ``workdir`` receives ``site.json``, the state directory and
    ``terminal.log``. Extra command-line arguments go in ``args``.
    """

    def __init__(
        self, workdir: Path, site: dict[str, Any], sensors: str | None, args: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.site = site
        self.sensors = sensors
        self.args = args
        self.state_dir = workdir / "state"
        self.log_path = workdir / "terminal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> TerminalProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        site_path = self.workdir / "site.json"
        site_path.write_text(json.dumps(self.site))
        cmd = [
            sys.executable,
            "-m",
            "edge.host",
            "--site",
            str(site_path),
            "--state-dir",
            str(self.state_dir),
            "--seed",
            "1",
            *self.args,
        ]
        if self.sensors:
            cmd += ["--sensors", self.sensors]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"terminal exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} x{count} not in terminal log:\n{self.log()}")
            time.sleep(0.05)


class Uplink:
    """Frames a cloud-side subscriber received: ``(arrival_time, topic, frame)``.

    ``acks``: play the ingest towards the terminals, i.e. publish an ``ack``
    frame (QoS 0, as ``cloud.ingest.acks`` does) for every uplink frame as it
    arrives; terminals keep queued frames until acked, and resend them after
    each reconnect. Leave it off for an observer beside a real ingest: an
    ack for a frame the ingest has not stored would make the terminal drop it.
    The client must use a service account that may publish acks (ingest).
    """

    def __init__(self, client: Client, *, acks: bool = False) -> None:
        self.acks = acks
        self.client = client
        self.items: list[tuple[float, str, dict[str, Any]]] = []
        self._hook(client)

    def switch(self, client: Client) -> None:
        """Continue with a new connection (same persistent session)."""
        self.client = client
        self._hook(client)

    def _hook(self, client: Client) -> None:
        if not self.acks:
            return
        inner = client.mqtt.on_message

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            inner(c, userdata, msg)
            self._ack(c, msg.topic, bytes(msg.payload))

        client.mqtt.on_message = on_message

    @staticmethod
    def _ack(c: Any, topic: str, payload: bytes) -> None:
        """On paho's thread: ack the frame at once (received is stored, for this stand-in)."""
        try:
            tid, direction, kind = topics.parse(topic)
            frame = decode_frame(payload)
        except ProtocolError:
            return
        if direction != topics.UP or kind == "death":
            return
        for ack_topic, ack in ack_frames({(tid, frame["boot"]): {frame["seq"]}}, int(time.time())):
            c.publish(ack_topic, ack, qos=topics.ACK_QOS)

    def drain(self) -> None:
        while True:
            try:
                msg = self.client.messages.get_nowait()
            except queue.Empty:
                return
            frame = decode_frame(msg.payload)
            topics.check_frame_topic(msg.topic, frame)
            self.items.append((time.monotonic(), msg.topic, frame))

    def frames(self, kind: str | None = None) -> list[dict[str, Any]]:
        self.drain()
        return [f for _, _, f in self.items if kind is None or f["type"] == kind]

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The first frame (received so far or later) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for f in self.frames():
                if predicate(f):
                    return f
            if time.monotonic() > deadline:
                kinds = [(f["type"], f["seq"]) for f in self.frames()]
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {kinds}")
            time.sleep(0.02)

    def arrival(self, frame: dict[str, Any]) -> float:
        for t, _, f in self.items:
            if f is frame:
                return t
        raise KeyError("frame not received")


def config_frame(tid: str, version: int, config: dict[str, Any], seq: int = 1) -> bytes:
    return frames.encode(
        {
            "type": "config",
            "tid": tid,
            "boot": 0,
            "seq": seq,
            "ts": int(time.time()),
            "unsynced": False,
            "version": version,
            "config": config,
        }
    )


def cmd_frame(tid: str, cid: int, name: str, args: dict[str, Any] | None = None) -> bytes:
    return frames.encode(
        {
            "type": "cmd",
            "tid": tid,
            "boot": 0,
            "seq": cid,
            "ts": int(time.time()),
            "unsynced": False,
            "id": cid,
            "name": name,
            "args": args or {},
        }
    )
