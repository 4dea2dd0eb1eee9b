"""Webhooks against a real HTTP receiver: signed SenML forwarding, retries,
dead letters, and alarm events to webhook targets; SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
from datetime import timedelta

import pytest

from cloud.alarms import on_frame
from cloud.forwarding import enqueue_samples
from cloud.models import DeliveryChannel, DeliveryStatus, ForwardingEndpoint
from cloud.notify import ledger as ledger_mod
from cloud.notify import outbox
from cloud.notify.settings import RetryPolicy
from tests.support.notify import (
    T0,
    alarm_frame,
    database,
    leak_rule,
    ledger,
    settings_for,
    target,
    world,
)
from tests.support.webhook import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "customer-shared-secret-0123"
POLICY = RetryPolicy(base_s=30, factor=2, max_delay_s=600, max_attempts=3, lease_s=60)
# SMTP is not used here. The receivers listen on loopback, which the worker
# refuses unless the operator allows it: these tests allow it explicitly.
SETTINGS = settings_for(1, webhook_allow="127.0.0.1/32")
TS = int(T0.timestamp())
POINTS = [("io", "mA", TS, 1.2), ("t", "degC", TS, 25.3), ("io", "mA", TS + 60, 1.3)]


@pytest.fixture
def env(db_url):
    with database(db_url) as (_engine, session):
        yield session, world(session)


def endpoint(session, terminal, url):
    ep = ForwardingEndpoint(customer_id=terminal.customer_id, url=url, hmac_secret=SECRET)
    session.add(ep)
    session.commit()
    return ep


def test_signed_senml_500_then_200_is_delivered_once(env):
    session, terminal = env
    with WebhookReceiver(statuses=[500, 200], verify_with=SECRET) as hook:
        ep = endpoint(session, terminal, hook.url)
        assert enqueue_samples(session, terminal, POINTS, now=T0) == 1
        session.commit()

        assert outbox.run_once(session, T0, SETTINGS, POLICY).retried == 1
        session.refresh(ep)
        assert (ep.last_status, ep.consecutive_failures) == (500, 1)
        assert outbox.run_once(session, T0 + timedelta(seconds=29), SETTINGS, POLICY).claimed == 0
        assert outbox.run_once(session, T0 + timedelta(seconds=30), SETTINGS, POLICY).sent == 1
        assert outbox.run_once(session, T0 + timedelta(hours=1), SETTINGS, POLICY).claimed == 0

        first, second = hook.requests
        assert [first.status, second.status] == [500, 200]
        assert first.signature_ok and second.signature_ok
        assert first.body == second.body
        assert first.headers["x-mimamori-delivery"] == second.headers["x-mimamori-delivery"]
        assert second.headers["content-type"] == "application/senml+json"
        records = json.loads(second.body)
        assert records[0]["bn"] == "mimamori:T0001:" and records[0]["bt"] == TS
        assert {(r["n"], r.get("t", 0), r["v"]) for r in records} == {
            ("io", 0, 1.2),
            ("t", 0, 25.3),
            ("io", 60, 1.3),
        }
        session.refresh(ep)
        assert (ep.last_status, ep.consecutive_failures) == (200, 0)
        assert ep.last_success_at == T0 + timedelta(seconds=30)
        (row,) = ledger(session)
        assert (row.status, row.attempts, row.billable) == (DeliveryStatus.SENT, 2, False)


def test_a_receiver_with_the_wrong_secret_refuses_and_the_row_goes_dead(env):
    session, terminal = env
    with WebhookReceiver(verify_with="not-the-customer-secret") as hook:
        endpoint(session, terminal, hook.url)
        enqueue_samples(session, terminal, POINTS, now=T0)
        session.commit()
        assert outbox.run_once(session, T0, SETTINGS, POLICY).dead == 1  # 401 is permanent
        assert hook.requests[0].status == 401 and hook.requests[0].signature_ok is False


def test_dead_receiver_ends_in_the_dead_letter_list_after_n_attempts(env):
    session, terminal = env
    with WebhookReceiver() as gone:
        url = gone.url  # a port that nobody listens on once it is stopped
    ep = endpoint(session, terminal, url)
    enqueue_samples(session, terminal, POINTS, now=T0)
    session.commit()
    now = T0
    for attempt in range(1, POLICY.max_attempts + 1):
        stats = outbox.run_once(session, now, SETTINGS, POLICY)
        assert stats.claimed == 1
        (row,) = ledger(session)
        assert row.attempts == attempt
        now += timedelta(hours=1)
    assert row.status == DeliveryStatus.DEAD and row.last_error == "could not connect"
    assert outbox.run_once(session, now, SETTINGS, POLICY).claimed == 0
    assert [r.id for r in outbox.dead_letters(session, customer_id=terminal.customer_id)] == [
        row.id
    ]
    session.refresh(ep)
    assert ep.consecutive_failures == POLICY.max_attempts and ep.last_status is None

    # The customer fixes their server; an operator requeues the dead letter.
    with WebhookReceiver(verify_with=SECRET) as hook:
        ep.url = hook.url
        session.commit()
        assert outbox.requeue(session, row.id, now)
        session.commit()
        assert outbox.run_once(session, now, SETTINGS, POLICY).sent == 1
        assert hook.requests[0].signature_ok


def test_client_errors_are_permanent_server_errors_and_429_are_retried(env):
    session, terminal = env
    with WebhookReceiver(statuses=[429, 503, 404]) as hook:
        endpoint(session, terminal, hook.url)
        enqueue_samples(session, terminal, POINTS, now=T0)
        session.commit()
        now = T0
        outcomes = []
        for _ in range(3):
            s = outbox.run_once(session, now, SETTINGS, POLICY)
            outcomes.append((s.retried, s.dead))
            now += timedelta(hours=1)
        assert outcomes == [(1, 0), (1, 0), (0, 1)]
        assert "HTTP 404" in (ledger(session)[0].last_error or "")


def test_disabled_endpoint_is_not_posted_to(env):
    session, terminal = env
    with WebhookReceiver() as hook:
        ep = endpoint(session, terminal, hook.url)
        enqueue_samples(session, terminal, POINTS, now=T0)
        ep.enabled = False
        session.commit()
        assert outbox.run_once(session, T0, SETTINGS, POLICY).dead == 1
        assert hook.requests == []


def test_alarm_events_reach_webhook_targets_as_signed_json(env):
    session, terminal = env
    leak_rule(session, terminal)
    hook_target = target(session, terminal, "https://placeholder.example/", channel="webhook")
    secret = hook_target.hmac_secret
    assert secret and len(secret) >= 32
    # The receiver checks the signature with the target's secret, as forwarding does.
    with WebhookReceiver(verify_with=secret) as hook:
        hook_target.address = hook.url
        session.commit()
        on_frame(session, terminal, alarm_frame(2, "raised", 312, 300), T0, False)
        session.commit()
        assert outbox.run_once(session, T0, SETTINGS, POLICY).sent == 1
        (req,) = hook.requests
        assert req.signature_ok
        event = json.loads(req.body)
        assert req.headers["x-mimamori-event"] == "raised"
        assert (event["terminal_id"], event["channel"], event["severity"], event["value"]) == (
            "T0001",
            "ior",
            "alarm",
            31.2,
        )
        assert event["at"] == T0.isoformat()


class SilentServer:
    """Accepts TCP connections and never answers: a hung customer server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self.sock.close()
        for c in self.accepted:
            c.close()
        self.thread.join(5)


def test_a_hung_server_costs_one_timeout_per_batch_not_one_per_row(env):
    session, terminal = env
    hung = SilentServer()
    try:
        endpoint(session, terminal, hung.url)
        for i in range(5):
            enqueue_samples(session, terminal, [("io", "mA", TS + i, float(i))], now=T0)
        session.commit()
        settings = dataclasses.replace(SETTINGS, webhook_timeout_s=1.0)
        stats = outbox.run_once(session, T0, settings, POLICY)
        assert (stats.claimed, stats.retried, stats.sent) == (5, 5, 0)
        assert len(hung.accepted) == 1  # the other four were deferred without trying
        errors = [r.last_error or "" for r in ledger(session)]
        assert all(e.startswith("no complete answer within 1 s") for e in errors), errors
    finally:
        hung.close()


def guarded(**kw):
    """The worker's settings as shipped: no allowance for internal addresses."""
    return dataclasses.replace(SETTINGS, **{"webhook_allow": "", **kw})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_internal_destinations_are_refused_at_connect_time(env, host):
    session, terminal = env
    with WebhookReceiver() as hook:
        url = hook.url.replace("127.0.0.1", host)
        # As if the name had resolved to a public address when it was saved.
        alarms = target(session, terminal, url, channel=DeliveryChannel.WEBHOOK)
        ep = endpoint(session, terminal, url)
        enqueue_samples(session, terminal, POINTS, now=T0)
        ledger_mod.queue_test(session, alarms, T0)
        session.commit()
        stats = outbox.run_once(session, T0, guarded(), POLICY)
        assert (stats.claimed, stats.sent) == (2, 0)
        assert hook.requests == []
        errors = [r.last_error or "" for r in ledger(session)]
        assert all(e.startswith("destination not found or not allowed") for e in errors), errors
        session.refresh(ep)
        assert ep.last_error == "destination not found or not allowed"  # on the customer's page


def test_the_operator_allowance_lets_named_on_premises_receivers_through(env):
    session, terminal = env
    with WebhookReceiver(verify_with=SECRET) as hook:
        endpoint(session, terminal, hook.url.replace("127.0.0.1", "localhost"))
        enqueue_samples(session, terminal, POINTS, now=T0)
        session.commit()
        assert outbox.run_once(session, T0, guarded(webhook_allow="localhost"), POLICY).sent == 1
        assert hook.requests[0].signature_ok


def test_failed_attempts_show_the_customer_nothing_about_the_network(env):
    session, terminal = env
    with WebhookReceiver() as gone:
        url = gone.url  # nobody listens here once it is stopped
    endpoint(session, terminal, url)
    enqueue_samples(session, terminal, POINTS, now=T0)
    session.commit()
    assert outbox.run_once(session, T0, SETTINGS, POLICY).retried == 1
    (row,) = ledger(session)
    assert row.last_error == "could not connect"
