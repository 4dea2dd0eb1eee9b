"""Health checks of the service's components.

A component's check is a callable taking no argument and returning a
:class:`Status`; raising counts as down with the exception as the detail.
:func:`run_checks` runs them side by side with a deadline, so one hanging
component cannot delay the others' record. What each built-in check means:

- ``database``: ``SELECT 1`` on the relational database;
- ``timeseries``: the store answers (``prepare()``: tables present / Influx
  database reachable);
- ``broker``: an MQTT CONNECT gets a CONNACK, whatever its return code (a
  refused anonymous login still proves the broker is serving);
- ``web``: the health URL answers HTTP with a status below 500;
- ``ingest``: when some terminal is online, a frame was stored within
  ``ingest_max_silence_s`` (ingest workers have no port of their own; if
  they stop, nothing marks the terminals offline, so this catches it).
"""

from __future__ import annotations

import concurrent.futures
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloud.config import Settings
from cloud.models import Connectivity, FrameReceipt, Terminal, utcnow
from cloud.ops.settings import OpsSettings
from cloud.timeseries import TimeSeriesStore


@dataclass(frozen=True)
class Status:
    ok: bool
    detail: str = ""


Check = Callable[[], Status]


@dataclass(frozen=True)
class Result:
    """One check's outcome and how long it took."""

    component: str
    ok: bool
    detail: str
    latency_ms: int


def check_database(engine: Engine) -> Check:
    def check() -> Status:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return Status(True)

    return check


def check_timeseries(store: TimeSeriesStore) -> Check:
    def check() -> Status:
        store.prepare()
        return Status(True)

    return check


def check_http(url: str, timeout_s: float) -> Check:
    def check() -> Status:
        request = urllib.request.Request(url, method="GET")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return Status(True, f"HTTP {response.status}")
        except urllib.error.HTTPError as err:
            return Status(err.code < 500, f"HTTP {err.code}")

    return check


# MQTT 3.1.1 CONNECT, clean session, keepalive 60 s, client id "mimamori-health".
_CLIENT_ID = b"mimamori-health"
_VARIABLE = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(_CLIENT_ID).to_bytes(2, "big") + _CLIENT_ID
CONNECT = b"\x10" + bytes([len(_VARIABLE)]) + _VARIABLE
DISCONNECT = b"\xe0\x00"
_CONNACK_CODES = {
    0: "accepted",
    1: "bad protocol",
    2: "id rejected",
    3: "unavailable",
    4: "bad credentials",
    5: "not authorised",
}


def check_mqtt(
    host: str, port: int, timeout_s: float, tls: bool = False, ca_file: str = ""
) -> Check:
    def check() -> Status:
        with socket.create_connection((host, port), timeout_s) as raw:
            sock: socket.socket = raw
            if tls:
                context = ssl.create_default_context(cafile=ca_file or None)
                sock = context.wrap_socket(raw, server_hostname=host)
            sock.settimeout(timeout_s)
            sock.sendall(CONNECT)
            reply = _read(sock, 4)
            if reply[0] != 0x20 or reply[1] != 2:
                return Status(False, f"not a CONNACK: {reply.hex()}")
            code = reply[3]
            if code == 0:
                sock.sendall(DISCONNECT)
            # 3 means the broker itself says it is unavailable.
            return Status(code != 3, f"CONNACK {code} ({_CONNACK_CODES.get(code, '?')})")

    return check


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def check_ingest(engine: Engine, max_silence_s: int) -> Check:
    def check() -> Status:
        with engine.connect() as conn:
            online = conn.scalar(
                sa.select(sa.func.count())
                .select_from(Terminal)
                .where(Terminal.connectivity == Connectivity.ONLINE)
            )
            if not online:
                return Status(True, "idle: no terminal online")
            newest = conn.scalar(sa.select(sa.func.max(FrameReceipt.received_at)))
        if newest is None:
            return Status(False, f"{online} terminals online, no frame ever stored")
        silence = utcnow() - newest
        ago = int(silence.total_seconds())
        if silence > timedelta(seconds=max_silence_s):
            return Status(False, f"{online} terminals online, last frame {ago} s ago")
        return Status(True, f"last frame {ago} s ago")

    return check


def build_checks(
    settings: Settings, ops: OpsSettings, engine: Engine, store: TimeSeriesStore
) -> dict[str, Check]:
    """The checks of ``ops.components``, configured from the settings."""
    makers: dict[str, Callable[[], Check]] = {
        "database": lambda: check_database(engine),
        "timeseries": lambda: check_timeseries(store),
        "broker": lambda: check_mqtt(
            ops.broker_host,
            ops.broker_port,
            ops.check_timeout_s,
            ops.broker_tls,
            ops.broker_ca_file,
        ),
        "ingest": lambda: check_ingest(engine, ops.ingest_max_silence_s),
        "web": lambda: check_http(ops.web_health_url, ops.check_timeout_s),
    }
    return {name: makers[name]() for name in ops.components}


def run_checks(checks: Mapping[str, Check], timeout_s: float) -> list[Result]:
    """Run every check concurrently; a check that raises or outlives
    ``timeout_s`` is down. Results are sorted by component name."""
    results = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(checks)))
    try:
        started = time.monotonic()
        futures = {name: pool.submit(_timed, check) for name, check in checks.items()}
        for name, future in sorted(futures.items()):
            left = max(0.0, timeout_s - (time.monotonic() - started))
            try:
                status, ms = future.result(timeout=left)
            except concurrent.futures.TimeoutError:
                status, ms = Status(False, f"no answer within {timeout_s} s"), int(timeout_s * 1000)
            results.append(Result(name, status.ok, status.detail[:500], ms))
    finally:
        # Do not wait for a hung check; its thread ends when its socket times out.
        pool.shutdown(wait=False, cancel_futures=True)
    return results


def _timed(check: Check) -> tuple[Status, int]:
    started = time.monotonic()
    try:
        status = check()
    except Exception as err:  # any failure of a component is "down", with its reason
        status = Status(False, f"{type(err).__name__}: {err}")
    return status, int((time.monotonic() - started) * 1000)
