"""Alarm mail end to end: engine -> ledger -> delivery worker -> a real SMTP server,
on SQLite and PostgreSQL. Mails are counted where they arrive."""

from __future__ import annotations

import collections
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.alarms import on_frame
from cloud.models import (
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    NotificationTarget,
    Severity,
    utcnow,
)
from cloud.notify import lanes, outbox
from cloud.notify import ledger as ledger_mod
from cloud.notify.mail import SmtpMailer, compose
from cloud.notify.settings import RetryPolicy
from tests.support.notify import (
    FAST,
    T0,
    alarm_frame,
    database,
    leak_rule,
    ledger,
    settings_for,
    target,
    world,
)
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.integration

MIN = timedelta(minutes=1)


@pytest.fixture
def sink():
    with SmtpSink() as s:
        yield s


@pytest.fixture
def env(db_url):
    """(ingest session, worker session, terminal): two sessions as two processes would have."""
    with database(db_url) as (engine, session):
        terminal = world(session)
        leak_rule(session, terminal)
        with db.session_factory(engine)() as worker:
            yield session, worker, terminal


def fire(session, terminal, f, at):
    on_frame(session, terminal, f, at, False)
    session.commit()


def by_recipient(sink):
    got = collections.defaultdict(list)
    for m in sink.messages:
        (rcpt,) = m.rcpt_tos
        got[rcpt].append((m["X-Mimamori-Event"], str(m["Subject"])))
    return dict(got)


def test_leakage_warning_alarm_recovery_mails_every_address_once_in_its_language(env, sink):
    session, worker, terminal = env
    target(session, terminal, "kanri@example.jp")  # Japanese (the customer's language)
    target(session, terminal, "ops@example.com", language="en")
    target(session, terminal, "pager@example.jp", min_severity=Severity.ALARM)
    target(session, terminal, "norecovery@example.jp", recovery=False)
    settings = settings_for(sink.port)

    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    assert outbox.run_once(worker, T0, settings, FAST).sent == 3  # pager waits for alarm level
    fire(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + MIN), T0 + MIN)
    fire(session, terminal, alarm_frame(2, "cleared", 250, 300, T0 + 2 * MIN), T0 + 2 * MIN)
    fire(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 3 * MIN), T0 + 3 * MIN)
    stats = outbox.run_once(worker, T0 + 3 * MIN, settings, FAST)
    assert (stats.sent, stats.retried, stats.dead) == (11, 0, 0)
    assert outbox.run_once(worker, T0 + 10 * MIN, settings, FAST).claimed == 0

    got = by_recipient(sink)
    assert {k: [e for e, _ in v] for k, v in got.items()} == {
        "kanri@example.jp": ["raised", "escalated", "deescalated", "cleared"],
        "ops@example.com": ["raised", "escalated", "deescalated", "cleared"],
        "pager@example.jp": ["escalated", "deescalated", "cleared"],  # paged, so told it is over
        "norecovery@example.jp": ["raised", "escalated", "deescalated"],
    }
    ja = dict(got["kanri@example.jp"])
    en = dict(got["ops@example.com"])
    assert ja["raised"] == "[mimamori] 【注意】発生: 第1工場 受電盤 (T0001) ior 漏洩電流 12.3 mA"
    assert ja["escalated"].startswith("[mimamori] 【警報】警報レベルに上昇")
    assert ja["cleared"] == "[mimamori] 【復旧】復旧: 第1工場 受電盤 (T0001) ior 漏洩電流"
    assert en["raised"] == (
        "[mimamori] WARNING raised: 第1工場 受電盤 (T0001) ior leakage current 12.3 mA"
    )
    assert en["cleared"].startswith("[mimamori] RECOVERED cleared")
    recovery = next(m for m in sink.messages if m["X-Mimamori-Event"] == "cleared")
    assert "復旧日時  : 2026-11-27 14:06 JST" in recovery.body
    assert "発生日時  : 2026-11-27 14:03 JST" in recovery.body
    # One Message-ID per ledger row, all different.
    assert len({m["Message-ID"] for m in sink.messages}) == 14
    # Billing counts what was delivered.
    assert ledger_mod.billable_count(worker, terminal.customer_id, T0, T0 + MIN * 60) == 14


def test_smtp_outage_delays_but_never_drops_or_doubles(env, sink):
    session, worker, terminal = env
    target(session, terminal, "a@example.jp")
    target(session, terminal, "b@example.com", language="en")
    settings = settings_for(sink.port)
    sink.stop()  # the mail server is down while the alarm fires

    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    fire(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + MIN), T0 + MIN)
    now = T0 + MIN
    stats = outbox.run_once(worker, now, settings, FAST)
    assert (stats.claimed, stats.sent, stats.retried) == (4, 0, 4)
    rows = ledger(worker)
    assert {(r.status, r.attempts, r.next_attempt_at) for r in rows} == {
        (DeliveryStatus.FAILED, 1, now + timedelta(seconds=60))
    }
    assert "Connection refused" in rows[0].last_error or "refused" in rows[0].last_error.lower()
    # Not due yet: backing off.
    assert outbox.run_once(worker, now + timedelta(seconds=59), settings, FAST).claimed == 0
    # Second failure doubles the wait.
    now += timedelta(seconds=60)
    assert outbox.run_once(worker, now, settings, FAST).retried == 4
    assert {r.next_attempt_at for r in ledger(worker)} == {now + timedelta(seconds=120)}

    sink.start()  # same port: the server is back
    assert sink.messages == []
    now += timedelta(seconds=120)
    assert outbox.run_once(worker, now, settings, FAST).sent == 4
    assert outbox.run_once(worker, now + timedelta(hours=5), settings, FAST).claimed == 0
    got = by_recipient(sink)
    assert {k: sorted(e for e, _ in v) for k, v in got.items()} == {
        "a@example.jp": ["escalated", "raised"],
        "b@example.com": ["escalated", "raised"],
    }
    assert {(r.status, r.attempts) for r in ledger(worker)} == {(DeliveryStatus.SENT, 3)}


def test_worker_crash_mid_send_retries_after_the_lease_with_the_same_message_id(env, sink):
    session, worker, terminal = env
    target(session, terminal, "a@example.jp")
    settings = settings_for(sink.port)
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)

    # A worker claims the row, hands the mail to the server, and dies before
    # recording the outcome.
    (claimed,) = outbox.claim(worker, T0, FAST)
    row = worker.get(Delivery, claimed.id)
    with SmtpMailer(settings) as m:
        m.send(
            compose(
                dedup_key=row.dedup_key,
                recipient=row.recipient,
                payload=row.payload,
                language=row.language,
                settings=settings,
                now=T0,
            ),
            row.recipient,
        )
    worker.rollback()

    # Other workers leave it alone while the lease lasts...
    assert outbox.run_once(worker, T0 + MIN, settings, FAST).claimed == 0
    # ...and retry it once the lease has passed.
    stats = outbox.run_once(worker, T0 + timedelta(seconds=FAST.lease_s), settings, FAST)
    assert stats.sent == 1
    first, second = sink.wait_for(2)
    assert first["Message-ID"] == second["Message-ID"]  # an MTA can drop the repeat
    (row,) = ledger(worker)
    assert (row.status, row.attempts) == (DeliveryStatus.SENT, 2)


def test_a_late_outcome_does_not_overwrite_a_newer_claim(env, sink):
    session, worker, terminal = env
    target(session, terminal, "a@example.jp")
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    (first,) = outbox.claim(worker, T0, FAST)
    later = T0 + timedelta(seconds=FAST.lease_s + 1)
    (second,) = outbox.claim(worker, later, FAST)  # lease passed, someone else took it
    assert second.token == first.token + 1
    # The first worker finally reports success: not recorded.
    assert not lanes.record(worker, first.id, first.token, T0)
    (row,) = ledger(worker)
    assert row.status == DeliveryStatus.QUEUED  # still the second worker's to finish


def test_permanent_smtp_refusal_goes_dead_at_once_temporary_is_retried(env, sink):
    session, worker, terminal = env
    target(session, terminal, "a@example.jp")
    settings = settings_for(sink.port)
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    sink.reply = "451 4.3.0 mailbox busy, try later"
    assert outbox.run_once(worker, T0, settings, FAST).retried == 1
    sink.reply = "550 5.1.1 no such user"
    assert outbox.run_once(worker, T0 + timedelta(minutes=2), settings, FAST).dead == 1
    (row,) = ledger(worker)
    assert row.status == DeliveryStatus.DEAD and "550" in row.last_error
    assert [r.id for r in outbox.dead_letters(worker)] == [row.id]
    assert ledger_mod.billable_count(worker, terminal.customer_id, T0, T0 + MIN * 60) == 0


def test_retry_budget_runs_out_into_the_dead_letter_list(env, sink):
    session, worker, terminal = env
    target(session, terminal, "a@example.jp")
    settings = settings_for(sink.port)
    sink.stop()
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    now = T0
    for _ in range(FAST.max_attempts):
        outbox.run_once(worker, now, settings, FAST)
        now += timedelta(hours=2)
    (row,) = ledger(worker)
    assert (row.status, row.attempts) == (DeliveryStatus.DEAD, FAST.max_attempts)
    sink.start()
    assert outbox.requeue(worker, row.id, now)
    worker.commit()
    assert outbox.run_once(worker, now, settings, FAST).sent == 1
    assert len(sink.wait_for(1)) == 1


def test_test_mail_is_delivered_but_not_billable(env, sink):
    session, worker, terminal = env
    t = target(session, terminal, "a@example.jp", language="en")
    assert ledger_mod.queue_test(session, t, T0)
    session.commit()
    assert outbox.run_once(worker, T0, settings_for(sink.port), FAST).sent == 1
    (m,) = sink.wait_for(1)
    assert str(m["Subject"]) == "[mimamori] Test message" and "14:03 JST" in m.body
    assert ledger_mod.billable_count(worker, terminal.customer_id, T0, T0 + MIN) == 0


def test_command_line_worker_sends_due_rows(env, sink, db_url):
    session, _worker, terminal = env
    target(session, terminal, "a@example.jp")
    now = utcnow()  # the command uses the wall clock
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, now), now)
    environ = {
        **os.environ,
        "MIMAMORI_SMTP_PORT": str(sink.port),
        "MIMAMORI_MAIL_FROM": "alerts@mimamori.example",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cloud.notify", "--database-url", db_url, "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "sent 1" in done.stdout
    (m,) = sink.wait_for(1)
    assert m.mail_from == "alerts@mimamori.example"
    assert session.scalar(sa.select(sa.func.count()).select_from(NotificationTarget)) == 1


def test_the_ledger_refuses_a_second_copy_of_a_notification(env):
    session, _worker, terminal = env

    def insert():
        return ledger_mod.insert(
            session,
            dedup_key="alarm:1:raised:1",
            event="raised",
            channel=DeliveryChannel.EMAIL,
            recipient="a@example.jp",
            language="ja",
            payload={"kind": "test"},
            due_at=T0,
            customer_id=terminal.customer_id,
        )

    assert insert() is True
    assert insert() is False
    session.commit()
    assert len(ledger(session)) == 1


def test_rows_a_batch_has_no_time_left_for_are_handed_back_uncounted(env, sink):
    session, worker, terminal = env
    for a in ("a@example.jp", "b@example.jp", "c@example.jp"):
        target(session, terminal, a)
    fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)
    no_time = RetryPolicy(lease_s=1e-6)  # the budget is gone before the first send
    stats = outbox.run_once(worker, T0, settings_for(sink.port), no_time)
    assert (stats.claimed, stats.released, stats.sent) == (3, 3, 0)
    assert {(r.status, r.attempts, r.next_attempt_at) for r in ledger(worker)} == {
        (DeliveryStatus.QUEUED, 0, T0)
    }
    assert outbox.run_once(worker, T0, settings_for(sink.port), FAST).sent == 3
    assert len(sink.wait_for(3)) == 3


def test_an_idle_pass_only_reads_so_it_never_queues_for_the_sqlite_write_lock(tmp_path, sink):
    # The delivery loop polls often; the ingest holds SQLite's single write lock
    # for each batch. A pass with nothing due must not ask for that lock.
    path = tmp_path / "idle.sqlite3"
    with database(f"sqlite:///{path}") as (_engine, session):
        terminal = world(session)
        target(session, terminal, "a@example.jp")
        fire(session, terminal, alarm_frame(1, "raised", 123, 100, T0), T0)  # due at T0
        impatient = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        ingest = sqlite3.connect(path, isolation_level=None)
        try:
            with db.session_factory(impatient)() as worker:
                ingest.execute("BEGIN IMMEDIATE")  # a batch in progress elsewhere
                try:
                    assert not outbox.any_due(worker, T0 - MIN)
                    idle = outbox.run_once(worker, T0 - MIN, settings_for(sink.port), FAST)
                    assert idle.claimed == 0
                    assert outbox.any_due(worker, T0)
                finally:
                    ingest.execute("ROLLBACK")
                assert outbox.run_once(worker, T0, settings_for(sink.port), FAST).sent == 1
        finally:
            ingest.close()
            impatient.dispose()
    assert [m["X-Mimamori-Event"] for m in sink.wait_for(1)] == ["raised"]
