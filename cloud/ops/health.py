"""Health checks of the service's components.

A component's check is a callable taking no argument and returning a
:class:`Status`; raising counts as down with the exception as the detail.
:func:`run_checks` runs them side by side with a deadline, so one hanging
component cannot delay the others' record. What each built-in check means:

- ``database``: ``SELECT 1`` on the relational database;
- ``timeseries``: the store answers (``prepare()``: tables present / Influx
  database reachable);
- ``broker``: the monitor service account logs in (CONNACK 0): the broker
  serves *and* is ours, with our accounts (:mod:`cloud.broker.probe`); it
  also reads the broker's count of connected clients (``$SYS``), kept as
  the figure ``clients_connected`` (the operations console shows it);
- ``web``: the health URL answers HTTP with a status below 500;
- ``ingest``: when some terminal is online, a frame was stored within
  ``ingest_max_silence_s`` (ingest workers have no port of their own; if
  they stop, nothing marks the terminals offline, so this catches it).
"""

from __future__ import annotations

import concurrent.futures
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloud.broker import probe
from cloud.config import Settings
from cloud.errors import ConfigError
from cloud.models import Connectivity, FrameReceipt, Terminal, utcnow
from cloud.ops.settings import MONITOR_PASSWORD_ENV, OpsSettings
from cloud.timeseries import TimeSeriesStore


@dataclass(frozen=True)
class Status:
    ok: bool
    detail: str = ""
    # Numbers the check read on the way (e.g. the broker's connected clients).
    figures: Mapping[str, int] = field(default_factory=dict)


Check = Callable[[], Status]


@dataclass(frozen=True)
class Result:
    """One check's outcome and how long it took."""

    component: str
    ok: bool
    detail: str
    latency_ms: int
    figures: Mapping[str, int] = field(default_factory=dict)


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


# Mosquitto publishes it (retained) every sys_interval seconds.
CLIENTS_CONNECTED = "$SYS/broker/clients/connected"


def check_mqtt(
    host: str,
    port: int,
    timeout_s: float,
    *,
    username: str,
    password: str,
    tls: bool = False,
    ca_file: str = "",
) -> Check:
    """Up when ``username`` logs in: a broker refusing our account is not ours
    (another Mosquitto on the port) or has lost our configuration."""

    def check() -> Status:
        code, connected = probe.read_retained(
            host,
            port,
            username,
            password,
            CLIENTS_CONNECTED,
            timeout_s=timeout_s,
            wait_s=min(1.0, timeout_s),
            tls=tls,
            tls_ca=ca_file,
            client_id_prefix="mimamori-health",
        )
        if code in (4, 5):
            return Status(
                False,
                f"{probe.describe(code)}: not our broker, or {username}'s "
                "password differs from the broker's",
            )
        figures = {}
        if connected is not None and connected.strip().isdigit():
            figures["clients_connected"] = int(connected)
        return Status(code == 0, probe.describe(code), figures)

    return check


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
            username=ops.broker_username,
            password=_monitor_password(ops),
            tls=ops.broker_tls,
            ca_file=ops.broker_ca_file,
        ),
        "ingest": lambda: check_ingest(engine, ops.ingest_max_silence_s),
        "web": lambda: check_http(ops.web_health_url, ops.check_timeout_s),
    }
    return {name: makers[name]() for name in ops.components}


def _monitor_password(ops: OpsSettings) -> str:
    if not ops.broker_password:
        raise ConfigError(
            f"components: the broker check logs in as {ops.broker_username!r}: set "
            f"${MONITOR_PASSWORD_ENV}, or leave broker out of components"
        )
    return ops.broker_password


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
            results.append(Result(name, status.ok, status.detail[:500], ms, status.figures))
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
