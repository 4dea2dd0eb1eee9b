"""The whole cloud for the HIL suite, started as an operator would run it.

:class:`Cloud` owns a migrated SQLite database and three roles:

- ``python -m cloud.ingest`` (shared subscription on the broker's service
  listener, alarm engine hooks on) as a child process;
- ``python -m cloud.notify run`` delivering the ledger to the SMTP server;
- the alarm sweep (:func:`cloud.alarms.conditions.sweep`), called every
  :data:`SWEEP_EVERY_S` by a thread here as the scheduler calls it every
  minute in production.

Tests read results the way the web site does: from the database and the
time-series store (:meth:`samples`, :meth:`alarms`, :meth:`deliveries`), and
wait for them with :func:`poll` (a deadline, never a bare sleep). A role that
dies is a failure naming its log (:meth:`check`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from cloud import db
from cloud.alarms.conditions import sweep
from cloud.models import (
    Alarm,
    AlarmCondition,
    Channel,
    Customer,
    Delivery,
    DeliveryChannel,
    FrameReceipt,
    NotificationTarget,
    Severity,
    Terminal,
    utcnow,
)
from cloud.timeseries import Point, SqlStore
from protocol import topics
from tests.support.broker import HOST, MosquittoBroker
from tests.support.virtual_terminal import config_frame

REPO = Path(__file__).resolve().parents[1]
INGEST_USER = "ingest"
INGEST_PASSWORD = "pw-hil-ingest"  # test-only account of the suite's own broker
SWEEP_EVERY_S = 2.0
# Late data (from a terminal's outbox after an outage) is "historical" when it
# is older than this at receipt. Production uses 300 s; the suite's outages
# last tens of seconds, so the limit is scaled down with them.
HISTORICAL_LAG_S = 5.0
T = TypeVar("T")


def poll(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> T:
    """Call ``predicate`` until it returns something truthy; AssertionError after
    ``timeout`` s naming ``what`` (a callable is asked only then, for details)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout} s waiting for {text}")
        time.sleep(interval)


@dataclass(frozen=True)
class Mailed:
    """One ledger row of an alarm notification, with its alarm."""

    recipient: str
    event: str
    cond: str
    channel: str | None
    severity: str
    status: str
    historical: bool


class Role:
    """One cloud role as a child process with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name, self.cmd, self.env = name, cmd, env
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            # cwd without instance/mimamori.toml: only the environment configures it
            self.proc = subprocess.Popen(
                self.cmd, cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Cloud:
    """Ingest + notify + sweep on one SQLite database; ``with Cloud(...) as c:``."""

    def __init__(self, workdir: Path, broker: MosquittoBroker, smtp_port: int) -> None:
        self.workdir = workdir
        self.broker = broker
        self.url = f"sqlite:///{workdir / 'cloud.sqlite3'}"
        env = {
            **os.environ,
            "MIMAMORI_DATABASE_URL": self.url,
            "MIMAMORI_INGEST_MQTT_PASSWORD": INGEST_PASSWORD,
        }
        env.pop("MIMAMORI_INSTANCE_FILE", None)
        py = sys.executable
        self.ingest = Role(
            "ingest",
            [
                py,
                "-m",
                "cloud.ingest",
                "--host",
                HOST,
                "--port",
                str(broker.ports["service"]),
                "--username",
                INGEST_USER,
                "--client-id",
                "hil-ingest",
                "--group",
                "hil",
                "--batch-ms",
                "20",
                "--historical-lag",
                str(HISTORICAL_LAG_S),
                "--stats-file",
                str(workdir / "ingest-stats.json"),
                "--stats-interval",
                "0.5",
                "--no-forwarding",
            ],
            workdir,
            env,
        )
        self.notify = Role(
            "notify",
            [
                py,
                "-m",
                "cloud.notify",
                "--database-url",
                self.url,
                "run",
                "--interval",
                "0.2",
                "--smtp-host",
                "127.0.0.1",
                "--smtp-port",
                str(smtp_port),
                "--mail-from",
                "alerts@hil.mimamori.example",
            ],
            workdir,
            env,
        )
        self.engine: sa.Engine | None = None
        self.store: SqlStore | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.sweep_errors: list[str] = []

    # -- lifecycle
    def __enter__(self) -> Cloud:
        db.upgrade(self.url)
        self.engine = db.make_engine(self.url)
        self.store = SqlStore(self.engine)
        self.store.prepare()
        self.ingest.start()
        poll(
            lambda: self._alive_or_fail() and self.ingest_stats().get("subscribed"),
            30,
            lambda: f"the ingest worker to subscribe:\n{self.ingest.log()}",
        )
        self.notify.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sweep", daemon=True)
        self._sweeper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(10)
        self.ingest.stop()
        self.notify.stop()
        if self.engine is not None:
            self.engine.dispose()

    def _sweep_loop(self) -> None:
        assert self.engine is not None
        factory = db.session_factory(self.engine)
        while not self._stop.wait(SWEEP_EVERY_S):
            try:
                with factory() as session:
                    sweep(session, utcnow(), self.store)
            except Exception as err:  # reported by check(): a sweep error fails the test
                self.sweep_errors.append(repr(err))

    def _alive_or_fail(self) -> bool:
        self.check()
        return True

    def ingest_stats(self) -> dict[str, Any]:
        """The ingest worker's counters (its --stats-file), {} before the first."""
        try:
            data: dict[str, Any] = json.loads((self.workdir / "ingest-stats.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def check(self) -> None:
        """AssertionError if a role died or the sweep failed."""
        for role in (self.ingest, self.notify):
            if role.proc is not None and not role.alive():
                raise AssertionError(
                    f"cloud {role.name} exited ({role.proc.returncode}):\n{role.log()}"
                )
        assert not self.sweep_errors, f"alarm sweep failed: {self.sweep_errors}"

    def session(self) -> sa.orm.Session:
        assert self.engine is not None
        return db.session_factory(self.engine)()

    # -- what the web site and operators would do
    def register(
        self,
        tid: str,
        *,
        targets: Iterable[tuple[str, str | None]],
        rules: Iterable[dict[str, Any]] = (),
    ) -> None:
        """A customer with contracted terminal ``tid``, e-mail targets
        ``(address, cond or None)`` (warning and worse) and alarm rules
        (``AlarmCondition`` fields) as the settings page stores them."""
        with self.session() as s:
            customer = Customer(name=f"HIL customer {tid}", timezone="Asia/Tokyo")
            s.add(customer)
            s.flush()
            s.add(
                Terminal(
                    id=tid,
                    customer_id=customer.id,
                    name=f"HIL {tid}",
                    contract_start=date(2025, 1, 1),
                    registered_on=date(2025, 1, 1),
                )
            )
            for address, cond in targets:
                s.add(
                    NotificationTarget(
                        customer_id=customer.id,
                        channel=DeliveryChannel.EMAIL,
                        address=address,
                        cond=cond,
                        min_severity=Severity.WARNING,
                    )
                )
            s.flush()
            for rule in rules:
                s.add(AlarmCondition(terminal_id=tid, **rule))
            s.commit()

    def push_config(self, tid: str, version: int, config: dict[str, Any]) -> None:
        """Record the push (status pending) and publish the retained config frame,
        as the web's settings page does."""
        with self.session() as s:
            terminal = s.get(Terminal, tid)
            assert terminal is not None, tid
            terminal.push_config(version, utcnow())
            s.commit()
        with self.broker.client("service", INGEST_USER, INGEST_PASSWORD) as pub:
            pub.connect_ok()
            rc = pub.publish(
                topics.downlink(tid, "config"), config_frame(tid, version, config), retain=True
            )
            assert rc is not None and not rc.is_failure, rc

    def forget_config(self, tid: str) -> None:
        """Clear the retained config (test hygiene: later terminals never see it)."""
        with self.broker.client("service", INGEST_USER, INGEST_PASSWORD) as pub:
            pub.connect_ok()
            pub.publish(topics.downlink(tid, "config"), b"", retain=True)

    # -- what the tests read
    def terminal(self, tid: str) -> Terminal:
        with self.session() as s:
            row = s.get(Terminal, tid)
            assert row is not None, tid
            s.expunge(row)
            return row

    def channels(self, tid: str) -> dict[str, tuple[str, str]]:
        """Current channels: name -> (unit, kind)."""
        with self.session() as s:
            rows = s.scalars(
                sa.select(Channel).where(Channel.terminal_id == tid, Channel.retired_at.is_(None))
            )
            return {c.name: (c.unit, c.kind) for c in rows}

    def samples(
        self, tid: str, channel: str, start: int = 0, end: int | None = None
    ) -> list[Point]:
        """Every stored sample of one channel, oldest first."""
        assert self.store is not None
        hi = end if end is not None else int(time.time()) + 3 * 86400
        result = self.store.query(tid, channel, start, hi, max_points=1_000_000)
        assert result.raw
        return list(result.points)

    def receipts(self, tid: str) -> list[tuple[int, int]]:
        """(boot, seq) of every frame ingest stored for ``tid``."""
        with self.session() as s:
            rows = s.execute(
                sa.select(FrameReceipt.boot, FrameReceipt.seq)
                .where(FrameReceipt.terminal_id == tid)
                .order_by(FrameReceipt.boot, FrameReceipt.seq)
            )
            return [(b, q) for b, q in rows]

    def alarms(self, tid: str) -> list[Alarm]:
        with self.session() as s:
            rows = list(
                s.scalars(sa.select(Alarm).where(Alarm.terminal_id == tid).order_by(Alarm.id))
            )
            s.expunge_all()
            return rows

    def alarm(self, tid: str, cond: str, channel: str | None = None) -> Alarm | None:
        """The newest alarm of ``cond`` (on ``channel``), or None."""
        found = [a for a in self.alarms(tid) if a.cond == cond and a.channel == channel]
        return found[-1] if found else None

    def state(self, tid: str, cond: str, channel: str | None = None) -> tuple[str, str]:
        """(severity, state) of the newest alarm of ``cond``, ("", "") if none."""
        a = self.alarm(tid, cond, channel)
        return (str(a.severity), str(a.state)) if a is not None else ("", "")

    def deliveries(self, tid: str, cond: str | None = None) -> list[Mailed]:
        """Ledger rows of ``tid``'s alarms (of ``cond``), in creation order."""
        with self.session() as s:
            q = (
                sa.select(Delivery, Alarm)
                .join(Alarm, Delivery.alarm_id == Alarm.id)
                .where(Alarm.terminal_id == tid)
                .order_by(Delivery.id)
            )
            if cond is not None:
                q = q.where(Alarm.cond == cond)
            return [
                Mailed(
                    d.recipient,
                    d.event,
                    a.cond,
                    a.channel,
                    str((d.payload or {}).get("severity", "")),
                    str(d.status),
                    bool((d.payload or {}).get("historical", False)),
                )
                for d, a in s.execute(q)
            ]


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
