"""A slow or hostile webhook endpoint delays only its own rows.

Real parts: a tarpit HTTP server (tests/support/tarpit.py), a real SMTP
server, a good webhook receiver, the ledger on SQLite and PostgreSQL, and the
delivery worker as a process for the wake-up test.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from datetime import timedelta
from email.message import EmailMessage

import pytest

from cloud import db
from cloud.models import Customer, DeliveryChannel, DeliveryStatus, NotificationTarget, utcnow
from cloud.notify import ledger as ledger_mod
from cloud.notify import outbox, webhook
from cloud.notify.errors import TransientDeliveryError, UnreachableError
from cloud.notify.mail import SmtpMailer
from cloud.notify.outbox import Busy
from tests.support.notify import FAST, T0, database, ledger, settings_for, world
from tests.support.smtp import SmtpSink
from tests.support.tarpit import Tarpit
from tests.support.webhook import WebhookReceiver

pytestmark = pytest.mark.integration

# The tests' receivers listen on loopback, which the delivery worker refuses
# unless the operator allows it (docs/security.md): allow it explicitly here.
LOOPBACK = "127.0.0.1/32"


def test_a_trickling_endpoint_cannot_hold_a_post_past_its_deadline():
    with Tarpit(mode="trickle", interval_s=0.05) as pit:
        # Every byte comes well within the timeout; only a total deadline ends it.
        with pytest.raises(TransientDeliveryError, match=r"no complete answer within 0\.5 s"):
            webhook.post(pit.url, b"{}", {}, 0.5)
        (conn,) = pit.wait_for_connections(1)
        assert conn.done.wait(10)
        assert conn.closed_by_client
        assert conn.sent < len(pit.response) // 2, "the sender read on past its deadline"


def queue(session, customer_id, key, channel, recipient, *, due):
    """One test message; webhook rows get a target of their own (for its secret)."""
    target_id = None
    if channel == DeliveryChannel.WEBHOOK:
        hook = NotificationTarget(customer_id=customer_id, channel=channel, address=recipient)
        session.add(hook)
        session.flush()
        target_id = hook.id
    ledger_mod.insert(
        session,
        dedup_key=key,
        event="test",
        channel=channel,
        recipient=recipient,
        language="en",
        payload={"kind": "test", "customer": "x", "timezone": "Asia/Tokyo", "at": due.isoformat()},
        due_at=due,
        customer_id=customer_id,
        target_id=target_id,
        billable=False,
    )


def other_customer(session, name):
    customer = Customer(name=name, language="en")
    session.add(customer)
    session.commit()
    return customer


def in_thread(fn, *args, **kwargs):
    result: dict[str, object] = {}

    def run():
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as err:  # reported by the caller
            result["error"] = err

    t = threading.Thread(target=run)
    t.start()
    return t, result


@pytest.fixture
def env(db_url):
    with database(db_url) as (engine, session):
        yield engine, session, world(session)


def test_alarm_mail_goes_out_while_another_customers_endpoint_holds_its_post(env):
    engine, session, terminal = env
    hostile = other_customer(session, "Tarpit Inc.")
    with SmtpSink() as sink, Tarpit(mode="hold") as pit:
        settings = settings_for(sink.port, webhook_timeout_s=30, webhook_allow=LOOPBACK)
        # The tarpit's row is older, so a worker sending in order would take it first.
        queue(session, hostile.id, "pit", DeliveryChannel.WEBHOOK, pit.url, due=T0 - timedelta(1))
        queue(session, terminal.customer_id, "mail", DeliveryChannel.EMAIL, "ops@acme.jp", due=T0)
        session.commit()
        with db.session_factory(engine)() as worker:
            thread, result = in_thread(outbox.run_once, worker, T0, settings, FAST)
            try:
                pit.wait_for_connections(1)
                (mail,) = sink.wait_for(1, timeout=10)
                assert not pit.connections[0].done.is_set(), "the tarpit let go first"
            finally:
                pit.release()
                thread.join(60)
        assert "error" not in result, result
        assert mail.rcpt_tos == ("ops@acme.jp",)
        assert {r.dedup_key: r.status for r in ledger(session)} == {
            "pit": DeliveryStatus.SENT,
            "mail": DeliveryStatus.SENT,
        }


def test_one_customer_with_many_slow_endpoints_holds_few_delivery_slots(env):
    engine, session, terminal = env
    hostile = other_customer(session, "Tarpit Inc.")
    with Tarpit(mode="hold") as pit, WebhookReceiver() as good:
        settings = settings_for(
            1,
            webhook_timeout_s=30,
            webhook_allow=LOOPBACK,
            webhook_concurrency=4,
            webhook_per_customer=2,
        )
        for i in range(6):  # six different URLs on the one tarpit
            url = f"{pit.url}/{i}"
            queue(
                session, hostile.id, f"pit{i}", DeliveryChannel.WEBHOOK, url, due=T0 - timedelta(1)
            )
        queue(session, terminal.customer_id, "good", DeliveryChannel.WEBHOOK, good.url, due=T0)
        session.commit()
        with db.session_factory(engine)() as worker:
            thread, result = in_thread(outbox.run_once, worker, T0, settings, FAST)
            try:
                pit.wait_for_connections(2)
                good.wait_for(1, timeout=10)
                assert len(pit.connections) == 2, "one customer took more than its share"
            finally:
                pit.release()
                thread.join(60)
        assert "error" not in result, result
        rows = {r.dedup_key: r for r in ledger(session)}
        assert rows["good"].status == DeliveryStatus.SENT
        held = [k for k, r in rows.items() if k.startswith("pit") and r.status == "sent"]
        assert len(held) == 2
        # The rest were handed back unsent and uncounted, due for the next pass.
        rest = [r for k, r in rows.items() if k.startswith("pit") and k not in held]
        assert {(r.status, r.attempts) for r in rest} == {(DeliveryStatus.QUEUED, 0)}


def test_the_worker_wakes_up_when_a_row_is_added(db_url):
    with SmtpSink() as sink, database(db_url) as (_engine, session):
        terminal = world(session)
        target = NotificationTarget(
            customer_id=terminal.customer_id, channel=DeliveryChannel.EMAIL, address="a@acme.jp"
        )
        session.add(target)
        session.commit()
        ledger_mod.queue_test(session, target, utcnow())
        session.commit()
        # Polling every 60 s: only a wake-up can deliver the second row in time.
        cmd = [sys.executable, "-m", "cloud.notify", "--database-url", db_url, "run"]
        cmd += ["--interval", "60", "--smtp-port", str(sink.port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            sink.wait_for(1, timeout=30)  # the first pass ran; the worker is idle now
            ledger_mod.queue_test(session, target, utcnow())
            session.commit()
            sink.wait_for(2, timeout=15)
        finally:
            proc.terminate()
            out = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert [r.status for r in ledger(session)] == [DeliveryStatus.SENT] * 2


def test_a_trickling_mail_server_cannot_hold_a_send_past_its_deadline():
    greeting = b"220-" + b"x" * 150 + b"\r\n220 slow\r\n"
    with Tarpit(mode="trickle", interval_s=0.05, greeting=greeting) as pit:
        mailer = SmtpMailer(dataclasses.replace(settings_for(pit.port), smtp_timeout_s=0.5))
        msg = EmailMessage()
        msg["Subject"] = "x"
        with mailer, pytest.raises(UnreachableError):
            mailer.send(msg, "ops@acme.jp")
        (conn,) = pit.wait_for_connections(1)
        assert conn.done.wait(10)
        assert conn.sent < len(greeting) // 2, "the mailer read on past its deadline"


def test_rows_waiting_for_a_busy_lane_do_not_make_the_worker_spin(env):
    _engine, session, terminal = env
    queue(session, terminal.customer_id, "a", DeliveryChannel.WEBHOOK, "https://a.example/", due=T0)
    session.commit()
    assert outbox.next_due(session) == T0
    # While a lane holds https://a.example/, its rows are nobody's business:
    # the worker sleeps until the lane ends (which wakes it), not until T0.
    assert outbox.next_due(session, Busy(destinations=frozenset({"https://a.example/"}))) is None
    assert not outbox.any_due(session, T0, Busy(webhooks_full=True))


def test_alarms_go_out_before_a_backlog_of_tests_and_digests(env):
    _engine, session, terminal = env
    with SmtpSink() as sink:
        for i in range(60):  # an earlier backlog: queued first, due first
            queue(
                session, terminal.customer_id, f"t{i}", DeliveryChannel.EMAIL, "a@acme.jp", due=T0
            )
        ledger_mod.insert(
            session,
            dedup_key="alarm",
            event="raised",
            channel=DeliveryChannel.EMAIL,
            recipient="pager@acme.jp",
            language="en",
            payload={
                "kind": "test",
                "customer": "x",
                "timezone": "Asia/Tokyo",
                "at": T0.isoformat(),
            },
            due_at=T0 + timedelta(seconds=30),
            customer_id=terminal.customer_id,
        )
        session.commit()
        now = T0 + timedelta(minutes=1)
        assert outbox.run_once(session, now, settings_for(sink.port), FAST, limit=10).sent == 10
        first = sink.wait_for(10)[0]
        assert first.rcpt_tos == ("pager@acme.jp",)
