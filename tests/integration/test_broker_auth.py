"""Who may log in to the broker: no anonymous access, right password, right listener.

Runs the project's rendered config on a mosquitto of its own (tests/support/broker.py).
"""

from __future__ import annotations

import pytest

from cloud.broker import account_from_row
from tests.support.broker import MosquittoBroker, MQTTv5, MQTTv311, connected

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("term-A", "pw-A", "terminal"),
    account_from_row("term-B", "pw-B", "terminal"),
    account_from_row("ingest", "pw-ingest", "ingest"),
]
LISTENERS = ("terminal", "terminal_tls", "service")
# Mosquitto answers every refusal with "not authorised": MQTT v5 reason code
# 0x87, v3.1.1 return code 5, which paho reports as the same reason code 0x87.
# (It does not use "bad user name or password", so a prober learns nothing
# about which usernames exist.)
NOT_AUTHORISED = 0x87


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker-auth"), ACCOUNTS) as b:
        yield b


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
@pytest.mark.parametrize("listener", LISTENERS)
def test_anonymous_connect_is_refused(broker, listener, protocol):
    with broker.client(listener, None, None, protocol=protocol) as client:
        rc = client.connect()
    assert rc.is_failure
    assert rc.value == NOT_AUTHORISED


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
@pytest.mark.parametrize(
    ("listener", "username", "password"),
    [
        ("terminal", "term-A", "pw-B"),  # another terminal's password
        ("terminal", "term-A", ""),  # empty password
        ("terminal", "term-C", "pw-C"),  # unknown terminal
        ("terminal_tls", "term-A", "wrong"),
        ("service", "ingest", "pw-A"),
    ],
)
def test_bad_credentials_are_refused(broker, listener, username, password, protocol):
    with broker.client(listener, username, password, protocol=protocol) as client:
        rc = client.connect()
    assert rc.value == NOT_AUTHORISED


@pytest.mark.parametrize(
    ("listener", "username", "password"),
    [
        ("terminal", "ingest", "pw-ingest"),  # a service account on the terminal port
        ("terminal_tls", "ingest", "pw-ingest"),
        ("service", "term-A", "pw-A"),  # a terminal on the service port
    ],
)
def test_accounts_only_work_on_their_own_listener(broker, listener, username, password):
    with broker.client(listener, username, password) as client:
        rc = client.connect()
    assert rc.value == NOT_AUTHORISED


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
@pytest.mark.parametrize(
    ("listener", "username", "password"),
    [
        ("terminal", "term-A", "pw-A"),
        ("terminal_tls", "term-B", "pw-B"),
        ("service", "ingest", "pw-ingest"),
    ],
)
def test_right_credentials_connect(broker, listener, username, password, protocol):
    with connected(broker, listener, username, password, protocol=protocol) as client:
        assert client.is_connected


def test_sighup_reloads_accounts_without_restart(tmp_path):
    """Add a terminal and revoke another while the broker keeps running.

    The revoked terminal's live connection is closed at reload and it cannot
    log in again; the new terminal can log in; the broker process is the same.
    """
    with MosquittoBroker(tmp_path, ACCOUNTS) as broker:
        pid = broker.pid
        with broker.client("terminal", "term-C", "pw-C") as client:
            assert client.connect().is_failure

        with connected(broker, "terminal", "term-B", "pw-B") as revoked:
            log_size = len(broker.log_text())
            new_accounts = [a for a in ACCOUNTS if a.username != "term-B"]
            new_accounts.append(account_from_row("term-C", "pw-C", "terminal"))
            broker.reload(new_accounts)
            broker.wait_for_log("Reloading config", after=log_size)
            revoked.wait_disconnected()

        with connected(broker, "terminal", "term-C", "pw-C") as added:
            assert added.is_connected
        with broker.client("terminal", "term-B", "pw-B") as client:
            assert client.connect().value == NOT_AUTHORISED
        # Untouched accounts keep working, on the same process.
        with connected(broker, "terminal_tls", "term-A", "pw-A"):
            pass
        assert broker.pid == pid and broker.running()
