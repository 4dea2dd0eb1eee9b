"""Two delivery workers on one ledger never send the same row twice
(PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the conditional claim)."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

from cloud import db
from cloud.models import DeliveryChannel, DeliveryStatus, utcnow
from cloud.notify import ledger as ledger_mod
from cloud.notify import outbox
from tests.support.notify import FAST, T0, database, ledger, settings_for, world
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.integration

ROWS = 120


def queue_rows(session, customer_id, n, due):
    for i in range(n):
        ledger_mod.insert(
            session,
            dedup_key=f"load:{i}",
            event="test",
            channel=DeliveryChannel.EMAIL,
            recipient=f"user{i % 7}@example.jp",
            language="ja",
            payload={
                "kind": "test",
                "customer": "Acme",
                "timezone": "Asia/Tokyo",
                "at": due.isoformat(),
            },
            due_at=due,
            customer_id=customer_id,
            billable=False,
        )
    session.commit()


def test_two_workers_in_threads_split_the_work_without_doubles(db_url):
    with SmtpSink() as sink, database(db_url) as (_engine, session):
        terminal = world(session)
        queue_rows(session, terminal.customer_id, ROWS, T0)
        settings = settings_for(sink.port)
        start = threading.Barrier(2)
        sent: dict[str, int] = {}
        errors: list[BaseException] = []

        def work(name):
            # Each worker has its own engine: its own connections, as a process would.
            own = db.make_engine(db_url)
            try:
                with db.session_factory(own)() as s:
                    start.wait()
                    total = 0
                    while True:
                        stats = outbox.run_once(s, T0, settings, FAST, limit=4)
                        total += stats.sent
                        assert stats.lost == 0 and stats.retried == 0, stats.errors
                        if stats.claimed == 0:
                            break
                    sent[name] = total
            except BaseException as err:  # reported by the main thread
                errors.append(err)
            finally:
                own.dispose()

        threads = [threading.Thread(target=work, args=(n,)) for n in ("w1", "w2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert sum(sent.values()) == ROWS
        assert min(sent.values()) > 0, sent  # both really worked
        ids = collections.Counter(m["Message-ID"] for m in sink.wait_for(ROWS))
        assert len(ids) == ROWS and max(ids.values()) == 1
        rows = ledger(session)
        assert {(r.status, r.attempts) for r in rows} == {(DeliveryStatus.SENT, 1)}


def test_two_worker_processes_never_double_send(db_url):
    with SmtpSink() as sink, database(db_url) as (_engine, session):
        terminal = world(session)
        queue_rows(session, terminal.customer_id, ROWS, utcnow() - timedelta(seconds=1))
        cmd = [
            sys.executable,
            "-m",
            "cloud.notify",
            "--database-url",
            db_url,
            "run",
            "--batch",
            "5",
            "--interval",
            "0.2",
            "--smtp-port",
            str(sink.port),
        ]
        procs = [
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            messages = sink.wait_for(ROWS, timeout=90)
            deadline = time.monotonic() + 30
            while {r.status for r in ledger(session)} != {DeliveryStatus.SENT}:
                assert time.monotonic() < deadline, "ledger not drained"
                time.sleep(0.1)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)  # graceful: finish the batch, then exit
            outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        ids = collections.Counter(m["Message-ID"] for m in messages + sink.messages[ROWS:])
        assert len(ids) == ROWS and max(ids.values()) == 1
        assert {r.attempts for r in ledger(session)} == {1}
