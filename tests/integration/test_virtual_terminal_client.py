"""The host HAL's umqtt-style MQTT client (edge/host/hal.py) against real brokers.

The project's Mosquitto for the normal exchange, and a scripted peer (a
socket server in this test that answers CONNECT and then stays silent) for
the PUBACK that never comes.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cloud.broker import account_from_row
from edge.host.hal import HostMQTTClient, MQTTError
from protocol import topics
from tests.support.broker import MosquittoBroker, connected, tls_context

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("C1", "pw-C1", "terminal"),
    account_from_row("ingest", "pw-ingest", "ingest"),
]
UP = topics.uplink("C1", "data")
DEATH = topics.uplink("C1", "death")


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("client-broker"), ACCOUNTS) as b:
        yield b


@pytest.fixture
def cloud(broker):
    with connected(broker, "service", "ingest", "pw-ingest") as c:
        c.subscribe("mm/v1/C1/up/#")
        yield c


def terminal(broker, password="pw-C1", listener="terminal", timeout=5.0):
    ctx = tls_context(broker.pki.ca) if listener == "terminal_tls" else None
    return HostMQTTClient(
        "C1", "127.0.0.1", broker.ports[listener], "C1", password, 30, ctx, timeout=timeout
    )


def test_qos1_publish_returns_after_puback_and_arrives(broker, cloud):
    c = terminal(broker)
    assert c.connect(True) is False
    c.publish(UP, b"\x01\x02", False, 1)
    msg = cloud.expect()
    assert (msg.topic, msg.payload) == (UP, b"\x01\x02")
    c.disconnect()


def test_downlink_delivered_one_message_per_check_msg(broker, cloud):
    got = []
    c = terminal(broker)
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect(True)
    c.subscribe(topics.downlink_filter("C1"), 1)
    for i in range(3):
        cloud.publish(topics.downlink("C1", "cmd"), b"cmd%d" % i)
    deadline = time.monotonic() + 5
    while len(got) < 3:
        assert time.monotonic() < deadline, got
        before = len(got)
        c.check_msg()
        assert len(got) - before <= 1
        time.sleep(0.01)
    assert got == [(topics.downlink("C1", "cmd").encode(), b"cmd%d" % i) for i in range(3)]
    c.disconnect()


def test_qos0_acks_are_delivered_like_any_downlink(broker, cloud):
    """The ingest sends its acks at QoS 0; the terminal's down/# subscription
    (QoS 1) must hand them over too, between and during its own publishes."""
    got = []
    c = terminal(broker)
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect(True)
    c.subscribe(topics.downlink_filter("C1"), 1)
    ack = topics.downlink("C1", "ack")
    cloud.publish(ack, b"ack-1", qos=0)
    c.publish(UP, b"\x01", False, 1)  # the ack may arrive while it waits for PUBACK
    cloud.publish(ack, b"ack-2", qos=0)
    deadline = time.monotonic() + 5
    while len(got) < 2:
        assert time.monotonic() < deadline, got
        c.check_msg()
        time.sleep(0.01)
    assert got == [(ack.encode(), b"ack-1"), (ack.encode(), b"ack-2")]
    c.disconnect()


def test_close_fires_the_will_disconnect_does_not(broker, cloud):
    c = terminal(broker)
    c.set_last_will(DEATH, b"dead-1", False, 1)
    c.connect(True)
    c.disconnect()  # clean: the will is discarded
    c2 = terminal(broker)
    c2.set_last_will(DEATH, b"dead-2", False, 1)
    c2.connect(True)
    c2.close()  # a lost link: the broker publishes the will
    msg = cloud.expect()
    assert (msg.topic, msg.payload) == (DEATH, b"dead-2")  # and not dead-1 before it


def test_refused_and_unreachable_raise_oserror(broker):
    c = terminal(broker, password="wrong")
    with pytest.raises(MQTTError, match="refused"):
        c.connect(True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = HostMQTTClient("C1", "127.0.0.1", port, "C1", "pw-C1", 30, None, timeout=2)
    with pytest.raises(OSError):
        c.connect(True)
    with pytest.raises(OSError):
        c.publish(UP, b"x", False, 1)  # never connected


def test_tls_with_the_right_ca_only(tmp_path):
    # The terminal listener is TLS or plain, one per broker: a TLS one here.
    with (
        MosquittoBroker(tmp_path, ACCOUNTS, tls=True) as broker,
        connected(broker, "service", "ingest", "pw-ingest") as cloud,
    ):
        cloud.subscribe("mm/v1/C1/up/#")
        c = terminal(broker, listener="terminal_tls")
        c.connect(True)
        c.publish(UP, b"tls", False, 1)
        assert cloud.expect().payload == b"tls"
        c.disconnect()
        _wrong_ca_fails(broker)


def _wrong_ca_fails(broker):
    wrong = HostMQTTClient(
        "C1",
        "127.0.0.1",
        broker.ports["terminal_tls"],
        "C1",
        "pw-C1",
        30,
        tls_context(broker.pki.wrong_ca),
        timeout=3,
    )
    with pytest.raises(OSError):
        wrong.connect(True)


def test_broker_gone_mid_session_raises_instead_of_hanging(tmp_path):
    with MosquittoBroker(tmp_path, ACCOUNTS) as b:
        c = terminal(b, timeout=3.0)
        c.connect(True)
        b.stop()
        t0 = time.monotonic()
        with pytest.raises(OSError):
            c.publish(UP, b"x", False, 1)
            c.check_msg()  # some stacks only notice on the next read
        assert time.monotonic() - t0 < 4.0


def test_puback_that_never_comes_times_out():
    """A scripted broker: CONNACK, then silence. publish(qos=1) must give up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    received = bytearray()

    def peer():
        conn, _ = server.accept()
        with conn:
            conn.recv(1024)  # CONNECT
            conn.sendall(b"\x20\x02\x00\x00")  # CONNACK accepted
            conn.settimeout(5)
            try:
                while chunk := conn.recv(1024):
                    received.extend(chunk)
            except OSError:
                pass

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    c = HostMQTTClient("C1", "127.0.0.1", port, None, None, 30, None, timeout=0.5)
    c.connect(True)
    t0 = time.monotonic()
    with pytest.raises(MQTTError, match="PUBACK"):
        c.publish(UP, b"payload", False, 1)
    assert 0.4 < time.monotonic() - t0 < 2.0
    thread.join(10)
    server.close()
    assert received[0] == 0x32  # PUBLISH, QoS 1
    assert b"payload" in received
