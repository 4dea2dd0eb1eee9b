"""The SMTP server is down while alarms fire, then comes back.

End to end with real processes: terminals (the real agent, see
:class:`tests.support.faults.AgentFleet`) decide alarms from their
simulated leakage monitors and publish alarm frames through the project's
Mosquitto to the ingest process (SQLite), whose alarm engine
writes one ledger row per state change and recipient; the delivery worker
(``python -m cloud.notify run``) polls the ledger and sends over SMTP to an
aiosmtpd server (:class:`tests.support.smtp.SmtpSink`) that is down the
whole time the alarms fire.

Every terminal goes through full alarm cycles on one leakage channel whose
rule has a warning level (in the terminal's cloud part and in the cloud):
its monitor's Ior is forced above the warning level, above the alarm
level, back below the alarm level and below the warning level, and the
agent reports warning raised (``raised``), alarm raised (``escalated``),
alarm cleared (``deescalated``), warning cleared (``cleared``): four state
changes per cycle. Each step waits until every terminal has queued its
alarm frame. Each customer has two e-mail
recipients that want every event, recoveries included. While the server is
down the worker fails every row and backs off (a short ``--retry-base``
stands in for the product's 60 s); the outage goes on ``OUTAGE_S`` after
the last state change was committed, and at least until every row has
failed once. Then the server listens again on the same port.

Asserted once the ledger says every row is sent and the worker has exited
(nothing can arrive after that): per state change and recipient exactly one
mail (counted by Message-ID and envelope recipient), none missing, none
doubled, nothing unexpected; per terminal and recipient the events match
what the terminal's frames imply; every row took more than one attempt.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.demo.procs import free_port
from cloud.models import (
    AlarmCondition,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    NotificationTarget,
    Severity,
)
from cloud.notify.mail import message_id
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.smtp import Received, SmtpSink

N = F.profile(10, 50)
CUSTOMERS = F.profile(2, 5)
CYCLES = F.profile(2, 4)
OUTAGE_S = F.profile(5.0, 30.0)
# The worker's first retry delay, doubled after each failure (the product's
# is 60 s). In the short profile the last rows fail about 5 times in
# OUTAGE_S, and the delay in force when the server returns is up to 4 s;
# in the long one up to 16 s.
RETRY_BASE_S = F.profile(0.25, 1.0)
DOMAIN = "mimamori.example"
MAIL_FROM = f"alerts@{DOMAIN}"
CHANNEL = "leak.ior"  # the agent's name for its insulation monitor's Ior (mA)
WARN_MA, ALARM_MA = 10.0, 30.0
THRESHOLDS = [{"channel": CHANNEL, "cond": "leak", "warn": WARN_MA, "alarm": ALARM_MA, "hyst": 1}]
# One cycle of a leakage alarm: the Ior forced on each monitor, and the
# state change the terminal's alarm frame makes in the cloud.
CYCLE = [(12.3, "raised"), (31.2, "escalated"), (25.0, "deescalated"), (5.0, "cleared")]
REFERENCES = re.compile(r"<alarm-(\d+)-([^@]+)@")


def recipients_of(customer: int) -> list[tuple[str, str]]:
    """(address, language) of a customer's two recipients."""
    return [(f"kanri{customer}@example.jp", "ja"), (f"tantou{customer}@example.com", "en")]


def customer_of(index: int) -> int:
    return index % CUSTOMERS


def seed(url: str, terminal_ids: list[str]) -> None:
    """CUSTOMERS customers sharing the terminals round robin, each with two
    e-mail recipients for every event of every terminal, and a leakage rule
    with a warning level on each terminal's Ior (so an alarm-level clear
    de-escalates instead of clearing)."""
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            for c in range(CUSTOMERS):
                customer = S.seed(s, [t for i, t in enumerate(terminal_ids) if customer_of(i) == c])
                for address, language in recipients_of(c):
                    s.add(
                        NotificationTarget(
                            customer_id=customer.id,
                            channel=DeliveryChannel.EMAIL,
                            address=address,
                            language=language,
                            min_severity=Severity.WARNING,
                            notify_recovery=True,
                        )
                    )
            s.add_all(
                AlarmCondition(
                    terminal_id=t, channel=CHANNEL, cond="leak", warn=WARN_MA, alarm=ALARM_MA
                )
                for t in terminal_ids
            )
            s.commit()
    finally:
        engine.dispose()


def port_outside_ephemeral_range(rng: random.Random) -> int:
    """A free loopback port below the kernel's ephemeral range.

    The sink is down for seconds and must get its port back. A port from
    ``bind(0)`` lies in the ephemeral range, where any process's outgoing
    connection (or another test's ``bind(0)``) may take it meanwhile; one
    run here failed that way (EADDRINUSE on the restart). Below the range
    only an explicit bind can take it. Falls back to ``bind(0)`` where the
    range cannot be read.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(200):
        if low <= 10000:
            break
        port = rng.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    return free_port()


class StampedSink(SmtpSink):
    """The project's sink, also noting when each message arrived (monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def _add(self, item: Received) -> None:
        self.arrivals.append(time.monotonic())
        super()._add(item)


class NotifyProcess:
    """``python -m cloud.notify run`` against ``url`` and the sink's port."""

    def __init__(self, url: str, smtp_port: int, workdir: Path) -> None:
        self.log_path = workdir / "notify.log"
        env = {**os.environ, "MIMAMORI_MESSAGE_ID_DOMAIN": DOMAIN, "MIMAMORI_SMTP_TIMEOUT_S": "5"}
        env.pop("MIMAMORI_INSTANCE_FILE", None)
        cmd = [
            sys.executable,
            "-m",
            "cloud.notify",
            "--database-url",
            url,
            "-v",
            "run",
            "--smtp-host",
            HOST,
            "--smtp-port",
            str(smtp_port),
            "--mail-from",
            MAIL_FROM,
            "--retry-base",
            str(RETRY_BASE_S),
        ]
        with self.log_path.open("ab") as log:
            # cwd: a directory without instance/mimamori.toml, so only env counts
            self.proc = subprocess.Popen(
                cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"cloud.notify exited {self.proc.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> int | None:
        """SIGTERM (finish the batch, exit); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def ledger_rows(eng: sa.Engine) -> list[Any]:
    with eng.connect() as conn:
        return list(
            conn.execute(
                sa.select(
                    Delivery.id,
                    Delivery.dedup_key,
                    Delivery.event,
                    Delivery.alarm_id,
                    Delivery.recipient,
                    Delivery.status,
                    Delivery.attempts,
                    Delivery.last_error,
                ).order_by(Delivery.id)
            )
        )


def all_failed_once(eng: sa.Engine, expected: int) -> bool:
    rows = ledger_rows(eng)
    return len(rows) == expected and all(
        r.status == DeliveryStatus.FAILED and r.attempts >= 1 for r in rows
    )


def all_sent(eng: sa.Engine) -> bool:
    return all(r.status == DeliveryStatus.SENT for r in ledger_rows(eng))


def force_all(fleet: F.AgentFleet, ior_ma: float) -> None:
    """Force every monitor's Ior to ``ior_ma``, then wait until each terminal
    queued one more alarm frame."""
    before = {t.tid: len(t.alarms()) for t in fleet.terms}
    for t in fleet.terms:
        t.bus.set_value(1, "ior", ior_ma)
    S.wait_for(
        lambda: fleet.check() and all(len(t.alarms()) == before[t.tid] + 1 for t in fleet.terms),
        30,
        f"every terminal's alarm frame for Ior {ior_ma} mA",
    )


def mail_figures(
    messages: list[Received], rows: list[Any], expected_events: dict[tuple[str, str], Counter[str]]
) -> dict[str, Any]:
    """Mails in the sink against the ledger and against the frames sent.

    ``expected_events[(terminal, recipient)]``: events the frames imply.
    A mail is identified by (Message-ID, envelope recipient); the Message-ID
    comes from the ledger row's dedup key, so every attempt at one row
    carries the same one.
    """
    seen: Counter[tuple[str, str]] = Counter()
    bad_envelope = 0
    for m in messages:
        (rcpt,) = m.rcpt_tos
        bad_envelope += m.mail_from != MAIL_FROM or str(m["To"]) != rcpt
        seen[(str(m["Message-ID"]), rcpt)] += 1
    wanted = {(message_id(r.dedup_key, DOMAIN), r.recipient) for r in rows}
    # Independent of the ledger: what arrived per terminal and recipient, by
    # event, each distinct mail once.
    got_events: dict[tuple[str, str], Counter[str]] = collections.defaultdict(Counter)
    alarms: dict[str, set[int]] = collections.defaultdict(set)
    firsts: dict[tuple[str, str], Received] = {}
    for m in messages:
        firsts.setdefault((str(m["Message-ID"]), m.rcpt_tos[0]), m)
    for (_mid, rcpt), m in firsts.items():
        ref = REFERENCES.search(str(m["References"] or ""))
        tid = ref.group(2) if ref else "?"
        if ref:
            alarms[tid].add(int(ref.group(1)))
        got_events[(tid, rcpt)][str(m["X-Mimamori-Event"])] += 1
    wrong_events = []
    for key in sorted(set(expected_events) | set(got_events)):
        want, got = expected_events.get(key, Counter()), got_events.get(key, Counter())
        if want != got:
            wrong_events.append([*key, dict(want), dict(got)])
    return {
        "mails_received": len(messages),
        "delivered_once": sum(1 for k in wanted if seen[k] == 1),
        "missing": sum(1 for k in wanted if seen[k] == 0),
        "duplicated": sum(n - 1 for n in seen.values() if n > 1),
        "unexpected": sum(n for k, n in seen.items() if k not in wanted),
        "bad_envelope": bad_envelope,
        "wrong_events": wrong_events[:10],
        "alarms_per_terminal": sorted({len(v) for v in alarms.values()}),
    }


def test_smtp_outage_then_exactly_one_mail_per_change_and_recipient(
    broker: MosquittoBroker,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    terminal_ids = F.tids(N)
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    seed(url, terminal_ids)
    eng = F.engine(url)
    sink = StampedSink()
    sink.port = port_outside_ephemeral_range(random.Random())
    sink.start()
    sink.stop()  # the server is down from here on
    down_at = time.monotonic()
    worker = F.IngestProcess(broker, tmp_path, url).start()
    notify = NotifyProcess(url, sink.port, tmp_path)
    fleet = F.AgentFleet(broker.ports["terminal"], N, tmp_path / "terminals", thresholds=THRESHOLDS)
    expected_rows = N * CYCLES * len(CYCLE) * 2
    try:
        fleet.start()
        fleet.wait_connected()
        for _cycle in range(CYCLES):
            for ior_ma, _event in CYCLE:
                force_all(fleet, ior_ma)
        # stored: alarm changes and ledger rows are committed with the frames
        F.settle(eng, [k for t in fleet.terms for k in t.alarms()], 60)
        queued_at = time.monotonic()
        # The fault goes on OUTAGE_S after the last state change was
        # committed, and at least until the worker has tried (and failed)
        # every row once.
        S.wait_for(
            lambda: notify.alive() and all_failed_once(eng, expected_rows),
            60,
            "every ledger row to fail once while the server is down",
            0.1,
        )
        time.sleep(max(0.0, queued_at + OUTAGE_S - time.monotonic()))  # the fault's duration
        rows_at_return = ledger_rows(eng)
        back = time.monotonic()
        sink.start()
        outage = back - down_at
        S.wait_for(
            lambda: notify.alive() and all_sent(eng),
            120 + 4 * OUTAGE_S,
            "the ledger to say every row is sent",
            0.1,
        )
        ledger_done = time.monotonic() - back
        # Once the worker has exited nothing more can arrive: a late
        # duplicate would be in the sink by now.
        notify_rc = notify.stop()
        fleet.stop()
        worker.stop()
    finally:
        notify.stop()
        fleet.stop()
        sink.stop()
    rows = ledger_rows(eng)
    eng.dispose()
    messages = sink.messages
    expected_events: dict[tuple[str, str], Counter[str]] = {}
    for i, tid in enumerate(terminal_ids):
        for address, _language in recipients_of(customer_of(i)):
            expected_events[(tid, address)] = Counter({event: CYCLES for _ior, event in CYCLE})
    changes = {r.dedup_key.rsplit(":", 1)[0] for r in rows}
    attempts = [r.attempts for r in rows]
    attempts_before = [r.attempts for r in rows_at_return]
    figures: dict[str, Any] = {
        "terminals": N,
        "customers": CUSTOMERS,
        "recipients": 2 * CUSTOMERS,
        "recipients_per_change": 2,
        "cycles": CYCLES,
        "state_changes": N * CYCLES * len(CYCLE),
        "state_changes_in_ledger": len(changes),
        "mails_expected": expected_rows,
        "ledger_rows": len(rows),
        **mail_figures(messages, rows, expected_events),
        "ledger_sent": sum(1 for r in rows if r.status == DeliveryStatus.SENT),
        "ledger_dead": sum(1 for r in rows if r.status == DeliveryStatus.DEAD),
        "attempts_at_return": [min(attempts_before, default=0), max(attempts_before, default=0)],
        "attempts": [min(attempts, default=0), max(attempts, default=0)],
        "rows_with_one_attempt": sum(1 for a in attempts if a <= 1),
        "retry_base_s": RETRY_BASE_S,
        "alarms_queued_s": round(queued_at - down_at, 2),
        "outage_s": round(outage, 2),
        "back_to_last_mail_s": round(max(sink.arrivals, default=back) - back, 2),
        "back_to_first_mail_s": round(min(sink.arrivals, default=back) - back, 2),
        "back_to_ledger_all_sent_s": round(ledger_done, 2),
        "mails_during_outage": sum(1 for t in sink.arrivals if t < back),
        "notify_exit": notify_rc,
        "last_error_sample": next((r.last_error for r in rows_at_return if r.last_error), None),
    }
    F.Report("smtp_outage", **figures).write()
    assert figures["ledger_rows"] == expected_rows, figures
    assert figures["state_changes_in_ledger"] == figures["state_changes"], figures
    assert figures["ledger_sent"] == expected_rows, figures
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["unexpected"] == 0 and figures["bad_envelope"] == 0, figures
    assert figures["delivered_once"] == expected_rows == figures["mails_received"], figures
    assert figures["wrong_events"] == [], figures
    assert figures["alarms_per_terminal"] == [CYCLES], figures
    assert figures["rows_with_one_attempt"] == 0, figures
    assert figures["mails_during_outage"] == 0, figures
    assert notify_rc == 0, figures
