"""The broker check against the project's real Mosquitto configuration."""

from __future__ import annotations

import contextlib
import time

import paho.mqtt.client as mqtt
import pytest

from cloud.broker import account_from_row
from cloud.ops.health import check_mqtt
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    accounts = [
        account_from_row("term-A", "pw-A", "terminal"),
        account_from_row("monitor", "pw-monitor", "monitor"),
    ]
    # $SYS every second, so the figures are there soon after the start.
    with MosquittoBroker(
        tmp_path_factory.mktemp("ops-health"), accounts, tls=True, sys_interval=1
    ) as b:
        yield b


def test_our_broker_is_up_and_the_check_leaves_no_refusal_in_its_log(broker):
    for _ in range(3):
        status = check_mqtt(
            "127.0.0.1", broker.ports["service"], 5.0, username="monitor", password="pw-monitor"
        )()
        assert status.ok and status.detail == "CONNACK 0 (accepted)"
    broker.wait_for_log("u'monitor'", timeout=5)
    assert "not authorised" not in broker.log_text()


def test_a_broker_that_does_not_know_our_account_is_down(broker):
    status = check_mqtt(
        "127.0.0.1", broker.ports["service"], 5.0, username="monitor", password="another"
    )()
    assert not status.ok and "not our broker" in status.detail


def test_tls_listener_is_checked_with_the_ca(broker):
    status = check_mqtt(
        "127.0.0.1",
        broker.ports["terminal_tls"],
        5.0,
        username="term-A",
        password="pw-A",
        tls=True,
        ca_file=str(broker.pki.ca),
    )()
    assert status.ok
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError: wrong CA
        check_mqtt(
            "127.0.0.1",
            broker.ports["terminal_tls"],
            5.0,
            username="term-A",
            password="pw-A",
            tls=True,
            ca_file=str(broker.pki.wrong_ca),
        )()


def test_a_stopped_broker_is_down(broker):
    broker.stop()
    try:
        with pytest.raises(OSError):
            check_mqtt(
                "127.0.0.1", broker.ports["service"], 2.0, username="monitor", password="x"
            )()
    finally:
        broker.start()


def test_the_check_reads_how_many_clients_the_broker_has(broker):
    check = check_mqtt(
        "127.0.0.1", broker.ports["service"], 5.0, username="monitor", password="pw-monitor"
    )

    def connected(extra):
        # The broker's own count, published every sys_interval: poll until it says so.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            figures = check().figures
            if figures.get("clients_connected") == extra:
                return True
            time.sleep(0.2)
        return False

    # The count as of the broker's last $SYS update (retained): the check's
    # own short connection is over before the next one.
    assert connected(0)
    with contextlib.ExitStack() as stack:
        for i in range(3):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"held-{i}")
            client.username_pw_set("monitor", "pw-monitor")
            client.connect("127.0.0.1", broker.ports["service"])
            client.loop_start()
            stack.callback(client.loop_stop)
            stack.callback(client.disconnect)
        assert connected(3)
    # An account without $SYS rights gets no figure, and the check is still up.
    terminal = check_mqtt(
        "127.0.0.1",
        broker.ports["terminal_tls"],
        5.0,
        username="term-A",
        password="pw-A",
        tls=True,
        ca_file=str(broker.pki.ca),
    )()
    assert terminal.ok and terminal.figures == {}
