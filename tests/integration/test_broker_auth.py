"""Who may log in to the broker: no anonymous access, right password, right listener.

Runs the project's rendered config on a mosquitto of its own (tests/support/broker.py).
"""

from __future__ import annotations

import pytest

from cloud.broker import account_from_row, dynsec, hash_password
from tests.support.broker import MosquittoBroker, MQTTv5, MQTTv311, connected

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("term-A", "pw-A", "terminal"),
    account_from_row("term-B", "pw-B", "terminal"),
    account_from_row("ingest", "pw-ingest", "ingest"),
]
LISTENERS = ("terminal", "service")
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
        ("terminal", "term-A", "wrong"),
        ("terminal", "mimamori.admin", "pw-A"),
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
        ("terminal", "term-B", "pw-B"),
        ("service", "ingest", "pw-ingest"),
    ],
)
def test_right_credentials_connect(broker, listener, username, password, protocol):
    with connected(broker, listener, username, password, protocol=protocol) as client:
        assert client.is_connected


def test_terminal_accounts_change_at_run_time_over_the_control_topic(tmp_path):
    """The plugin's commands, as the reconciler sends them: a new terminal
    logs in at once; a new password ends the session opened with the old one
    and the old one is refused; disabled and deleted accounts are refused and
    disconnected; nothing is restarted."""
    with MosquittoBroker(tmp_path, ACCOUNTS) as broker, broker.control() as control:
        pid = broker.pid
        with broker.client("terminal", "term-C", "pw-C") as client:
            assert client.connect().value == NOT_AUTHORISED
        assert all(
            a.error is None
            for a in control.execute(
                dynsec.create_terminal("term-C", "pw-C", hash_password("pw-C"))
            )
        )
        with connected(broker, "terminal", "term-C", "pw-C") as added:
            assert added.is_connected

        with connected(broker, "terminal", "term-A", "pw-A") as old_session:
            control.execute(dynsec.set_password("term-A", "pw-A2", hash_password("pw-A2")))
            old_session.wait_disconnected()
        with broker.client("terminal", "term-A", "pw-A") as client:
            assert client.connect().value == NOT_AUTHORISED
        with connected(broker, "terminal", "term-A", "pw-A2"):
            pass

        with connected(broker, "terminal", "term-B", "pw-B") as suspended:
            control.execute(dynsec.set_enabled("term-B", False))
            suspended.wait_disconnected()
        with broker.client("terminal", "term-B", "pw-B") as client:
            assert client.connect().value == NOT_AUTHORISED
        control.execute(dynsec.set_enabled("term-B", True))
        with connected(broker, "terminal", "term-B", "pw-B") as resumed:
            control.execute(dynsec.delete_terminal("term-B"))
            resumed.wait_disconnected()
        with broker.client("terminal", "term-B", "pw-B") as client:
            assert client.connect().value == NOT_AUTHORISED
        assert broker.pid == pid and broker.running()


def test_sighup_reloads_service_accounts_without_restart(tmp_path):
    """Service accounts stay in a rendered password file: a new one works
    after SIGHUP, a removed one is disconnected and refused, terminals stay."""
    with MosquittoBroker(tmp_path, ACCOUNTS) as broker:
        pid = broker.pid
        with (
            connected(broker, "service", "ingest", "pw-ingest") as revoked,
            connected(broker, "terminal", "term-A", "pw-A") as terminal,
        ):
            log_size = len(broker.log_text())
            broker.reload([account_from_row("web", "pw-web", "web")])
            broker.wait_for_log("Reloading config", after=log_size)
            revoked.wait_disconnected()
            assert terminal.is_connected
        with connected(broker, "service", "web", "pw-web") as added:
            assert added.is_connected
        with broker.client("service", "ingest", "pw-ingest") as client:
            assert client.connect().value == NOT_AUTHORISED
        assert broker.pid == pid and broker.running()
