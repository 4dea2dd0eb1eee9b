"""Chat and push targets (Apprise) end to end against a real HTTP receiver
on loopback, shaped like an ntfy server and like a generic JSON hook: the
alarm reaches it once, in the target's language; the address guard holds
for Apprise's own HTTP (loopback refused unless the operator allows it, and
the refusal comes from the dial, not from a check before it); a receiver
that trickles its answer is cut at the deadline; SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from datetime import timedelta

import pytest

from cloud.alarms import on_frame
from cloud.models import DeliveryChannel, DeliveryStatus
from cloud.notify import chat, outbox
from cloud.notify.netguard import AddressPolicy, Refused
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

POLICY = RetryPolicy(base_s=30, factor=2, max_delay_s=600, max_attempts=3, lease_s=60)
# The receivers listen on loopback: allowed here explicitly, as an operator would.
ALLOWED = settings_for(1, webhook_allow="127.0.0.1/32", webhook_timeout_s=5)
GUARDED = dataclasses.replace(ALLOWED, webhook_allow="")


@pytest.fixture
def env(db_url):
    with database(db_url) as (_engine, session):
        terminal = world(session)
        leak_rule(session, terminal)
        yield session, terminal


def port_of(hook: WebhookReceiver) -> int:
    return int(hook.url.split(":")[2].split("/")[0])


def raise_leak(session, terminal):
    on_frame(session, terminal, alarm_frame(2, "raised", 312, 300), T0, False)
    session.commit()


def test_an_alarm_reaches_an_ntfy_server_once_in_japanese(env):
    session, terminal = env
    with WebhookReceiver() as hook:
        address = f"ntfy://127.0.0.1:{port_of(hook)}/plant-7"
        target(session, terminal, address, channel=DeliveryChannel.CHAT)
        raise_leak(session, terminal)
        (row,) = ledger(session)
        assert (row.channel, row.recipient, row.billable) == ("chat", address, True)

        assert outbox.run_once(session, T0, ALLOWED, POLICY).sent == 1
        (got,) = hook.wait_for(1)
        message = json.loads(got.body)
        assert message["topic"] == "plant-7"
        assert "警報" in message["title"] and "第1工場 受電盤" in message["title"]
        assert "31.2 mA" in message["message"]
        # Sent is sent: a later pass claims nothing, the receiver hears nothing more.
        assert outbox.run_once(session, T0 + timedelta(hours=1), ALLOWED, POLICY).claimed == 0
        session.refresh(row)
        assert row.status == DeliveryStatus.SENT
        assert len(hook.requests) == 1


def test_loopback_is_refused_at_the_dial_unless_allowed(env):
    session, terminal = env
    with WebhookReceiver() as hook:
        target(
            session,
            terminal,
            f"json://localhost:{port_of(hook)}/alarms",
            channel=DeliveryChannel.CHAT,
            language="en",
        )
        raise_leak(session, terminal)
        stats = outbox.run_once(session, T0, GUARDED, POLICY)
        assert stats.retried == 1
        (row,) = ledger(session)
        assert row.last_error == "destination not found or not allowed"
        assert hook.requests == []
        # The operator allows the on-premises receiver by name: delivered.
        named = dataclasses.replace(GUARDED, webhook_allow="localhost")
        assert outbox.run_once(session, T0 + timedelta(seconds=30), named, POLICY).sent == 1
        (got,) = hook.wait_for(1)
        body = json.loads(got.body)
        assert body["title"].startswith("[mimamori]") and "ALARM" in body["title"]


def test_the_guard_sees_the_addresses_apprise_dials(env):
    """Not a check of the URL text before sending: the dial itself is guarded."""
    seen: list[str] = []

    def guard(host, infos):
        seen.append(host)
        return AddressPolicy().guard(host, infos)

    with WebhookReceiver() as hook, pytest.raises(Refused):
        chat.send(f"json://127.0.0.1:{port_of(hook)}/x", "t", "b", timeout_s=5, guard=guard)
    assert seen == ["127.0.0.1"] and hook.requests == []


def test_a_trickling_chat_server_is_cut_at_the_deadline():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        stop = threading.Event()

        def trickle():
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                while not stop.wait(0.2):
                    try:
                        conn.sendall(b".")
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            with pytest.raises(chat.TransientDeliveryError, match="within 1 s"):
                chat.send(
                    f"json://127.0.0.1:{port}/x?rto=30",
                    "t",
                    "b",
                    timeout_s=1,
                    guard=AddressPolicy("127.0.0.1/32").guard,
                )
            assert time.monotonic() - started < 10  # cut, not the 30 s read timeout
        finally:
            stop.set()
            thread.join(5)
