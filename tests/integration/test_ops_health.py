"""The broker check against the project's real Mosquitto configuration."""

from __future__ import annotations

import pytest

from cloud.broker import account_from_row
from cloud.ops.health import check_mqtt
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    accounts = [account_from_row("term-A", "pw-A", "terminal")]
    with MosquittoBroker(tmp_path_factory.mktemp("ops-health"), accounts, tls=True) as b:
        yield b


def test_a_serving_broker_is_up_although_it_refuses_the_anonymous_login(broker):
    status = check_mqtt("127.0.0.1", broker.ports["service"], 5.0)()
    assert status.ok and status.detail == "CONNACK 5 (not authorised)"
    broker.wait_for_log("New connection from 127.0.0.1", timeout=5)


def test_tls_listener_is_checked_with_the_ca(broker):
    status = check_mqtt(
        "127.0.0.1", broker.ports["terminal_tls"], 5.0, tls=True, ca_file=str(broker.pki.ca)
    )()
    assert status.ok
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError: wrong CA
        check_mqtt(
            "127.0.0.1",
            broker.ports["terminal_tls"],
            5.0,
            tls=True,
            ca_file=str(broker.pki.wrong_ca),
        )()


def test_a_stopped_broker_is_down(broker):
    broker.stop()
    try:
        with pytest.raises(OSError):
            check_mqtt("127.0.0.1", broker.ports["service"], 2.0)()
    finally:
        broker.start()
