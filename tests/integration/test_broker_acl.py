"""What each account may publish and receive, on a real mosquitto with the project's ACL.

Non-delivery is proven without sleeping: after the denied message, an
allowed "sentinel" goes the same way to the same subscriber; MQTT keeps one
publisher's messages in order, so once the sentinel is in, anything that
had got through would already be there.
"""

from __future__ import annotations

import pytest

from cloud.broker import account_from_row
from cloud.broker.acl import shared_uplink_filter
from protocol.topics import downlink, downlink_filter, uplink
from tests.support.broker import MosquittoBroker, MQTTv5, MQTTv311, connected

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("A", "pw-A", "terminal"),
    account_from_row("B", "pw-B", "terminal"),
    account_from_row("ingest", "pw-ingest", "ingest"),
    account_from_row("web", "pw-web", "web"),
    account_from_row("monitor", "pw-monitor", "monitor"),
]
PROTOCOLS = pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker-acl"), ACCOUNTS) as b:
        yield b


@pytest.fixture
def ingest(broker):
    """The cloud's ingest worker on the shared subscription over all uplink."""
    with connected(broker, "service", "ingest", "pw-ingest") as client:
        assert [rc.value for rc in client.subscribe(shared_uplink_filter())] == [1]
        yield client


def terminal(broker, name, protocol=MQTTv5, listener="terminal"):
    return connected(broker, listener, name, f"pw-{name}", protocol=protocol)


@PROTOCOLS
def test_terminal_uplink_reaches_ingest_through_shared_subscription(broker, ingest, protocol):
    with terminal(broker, "A", protocol) as a:
        rc = a.publish(uplink("A", "data"), b"\xa1\x01\x02", qos=1)
        assert not rc.is_failure
        msg = ingest.expect()
    assert (msg.topic, msg.payload) == (uplink("A", "data"), b"\xa1\x01\x02")


@pytest.mark.parametrize(
    "topic",
    [
        uplink("B", "data"),  # impersonate another terminal
        downlink("B", "config"),  # configure another terminal
        "mm/v1/A",  # outside its own subtree
        "elsewhere/x",
    ],
)
def test_qos1_publish_outside_own_uplink_gets_puback_not_authorized_v5(broker, topic):
    with terminal(broker, "A") as a:
        assert a.publish(topic, b"evil", qos=1).value == NOT_AUTHORIZED


@PROTOCOLS
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_to_other_terminal_is_never_delivered(broker, ingest, protocol, qos):
    # v3.1.1 has no reason codes: mosquitto acknowledges QoS 1 and drops it;
    # QoS 0 is dropped silently on both versions.
    with terminal(broker, "A", protocol) as a:
        a.publish(uplink("B", "data"), b"spoofed", qos=qos)
        a.publish(uplink("A", "data"), b"sentinel", qos=1)
        seen = ingest.expect_until(b"sentinel")
    assert [m.payload for m in seen] == [b"sentinel"]


@PROTOCOLS
@pytest.mark.parametrize(
    "topic",
    ["#", "mm/v1/+/down/#", "mm/v1/B/down/#", "$SYS/#", "mm/v1/B/up/#", "$share/x/mm/v1/B/down/#"],
)
def test_subscription_outside_own_downlink_is_refused_and_delivers_nothing(broker, protocol, topic):
    """The dynamic-security plugin refuses the SUBSCRIBE itself (SUBACK 0x87
    on v5, 0x80 on v3.1.1) and checks the receive right on every message:
    B's retained config and B's new commands never reach A, while A's own do.
    """
    with connected(broker, "service", "web", "pw-web") as web:
        assert not web.publish(downlink("B", "config"), b"B-cfg", retain=True).is_failure
        with terminal(broker, "A", protocol) as a, terminal(broker, "B") as b:
            codes = a.subscribe(topic)
            assert [rc.value for rc in codes] == [NOT_AUTHORIZED if protocol == MQTTv5 else 0x80]
            assert a.subscribe(downlink_filter("A"))[0].value == 1
            web.publish(downlink("B", "cmd"), b"B-cmd")
            b.publish(uplink("B", "data"), b"B-data")
            web.publish(downlink("A", "cmd"), b"sentinel")
            seen = a.expect_until(b"sentinel")
    assert [m.payload for m in seen] == [b"sentinel"]


@PROTOCOLS
def test_terminal_cannot_poison_its_own_retained_config(broker, protocol):
    """A terminal may read its downlink, never write it: a retained message it
    plants would be what it (or a replacement unit) reads as "config" after a
    reboot. The cloud's retained config must be what a new subscriber gets."""
    config = downlink("A", "config")
    with connected(broker, "service", "web", "pw-web") as web:
        assert not web.publish(config, b"cloud-config", retain=True).is_failure
    with terminal(broker, "A", protocol) as a:
        rc = a.publish(config, b"poisoned", qos=1, retain=True)
        if protocol == MQTTv5:
            assert rc.value == NOT_AUTHORIZED
        a.publish(config, b"poisoned-qos0", qos=0, retain=True)
        # A PUBACK on the same connection means the QoS 0 packet before it
        # was processed too.
        assert not a.publish(uplink("A", "status"), b"sync", qos=1).is_failure
    with terminal(broker, "A", protocol) as fresh:
        fresh.subscribe(downlink_filter("A"))
        msg = fresh.expect()
    assert (msg.payload, msg.retain) == (b"cloud-config", True)


@PROTOCOLS
def test_ingest_acks_reach_only_their_terminal_and_only_ingest_may_send_them(broker, protocol):
    """Acks (QoS 0, what the ingest worker sends) reach the terminal on its
    down/# subscription. An ack makes a terminal delete frames for good, so
    neither the web account nor a terminal (for itself or another) may send one."""
    with terminal(broker, "A", protocol) as a, terminal(broker, "B") as b:
        a.subscribe(downlink_filter("A"))
        b.subscribe(downlink_filter("B"))
        with connected(broker, "service", "web", "pw-web") as web:
            assert web.publish(downlink("A", "ack"), b"web-ack", qos=1).value == NOT_AUTHORIZED
        if protocol == MQTTv5:
            assert a.publish(downlink("A", "ack"), b"self-ack", qos=1).value == NOT_AUTHORIZED
        b.publish(downlink("A", "ack"), b"B-acks-A", qos=0)
        # B's PUBACK on the same connection: its QoS 0 packet was handled first
        assert not b.publish(uplink("B", "status"), b"sync", qos=1).is_failure
        with connected(broker, "service", "ingest", "pw-ingest") as ing:
            ing.publish(downlink("A", "ack"), b"ack-A", qos=0)
            ing.publish(downlink("B", "ack"), b"ack-B", qos=0)
            ing.publish(downlink("A", "cmd"), b"sentinel", qos=1)
            seen = [m for m in a.expect_until(b"sentinel") if not m.retain]
            assert [m.payload for m in seen] == [b"ack-A", b"sentinel"]
            assert seen[0].topic == downlink("A", "ack") and seen[0].qos == 0
            ing.publish(downlink("B", "cmd"), b"sentinel-B", qos=1)
            assert [m.payload for m in b.expect_until(b"sentinel-B") if not m.retain] == [
                b"ack-B",
                b"sentinel-B",
            ]


def test_cloud_downlink_reaches_only_its_terminal(broker):
    with terminal(broker, "A") as a, terminal(broker, "B") as b:
        a.subscribe(downlink_filter("A"))
        b.subscribe(downlink_filter("B"))
        with connected(broker, "service", "ingest", "pw-ingest") as ing:
            assert not ing.publish(downlink("A", "cmd"), b"for-A").is_failure
            assert not ing.publish(downlink("B", "cmd"), b"for-B").is_failure
        # Retained config from earlier tests may come first; skip it.
        assert [m.payload for m in a.expect_until(b"for-A") if not m.retain] == [b"for-A"]
        assert [m.payload for m in b.expect_until(b"for-B") if not m.retain] == [b"for-B"]


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("web", uplink("A", "data")),  # services never speak for a terminal
        ("ingest", uplink("A", "data")),
        ("monitor", downlink("A", "cmd")),  # monitoring cannot command terminals
        ("web", "$SYS/broker/x"),
    ],
)
def test_service_accounts_are_limited_to_their_role(broker, user, topic):
    with connected(broker, "service", user, f"pw-{user}") as client:
        assert client.publish(topic, b"x", qos=1).value == NOT_AUTHORIZED


def test_monitor_can_round_trip_on_its_probe_topic(broker):
    with connected(broker, "service", "monitor", "pw-monitor") as mon:
        mon.subscribe("mm/probe/#")
        assert not mon.publish("mm/probe/monitor/ping", b"1").is_failure
        assert mon.expect().payload == b"1"


def test_client_id_takeover_by_another_terminal_is_ignored(broker, ingest):
    """On terminal listeners the client id is the username, whatever the
    client sends: B asking for client id "A" gets "B" and A stays online.
    Only A's own credentials replace A's connection (a rebooted unit)."""
    with broker.client("terminal", "A", "pw-A", client_id="A") as a:
        a.connect_ok()
        with broker.client("terminal", "B", "pw-B", client_id="A") as intruder:
            intruder.connect_ok()
            # A is still connected and still delivers: prove it end to end.
            assert not a.publish(uplink("A", "data"), b"still-here").is_failure
            assert ingest.expect_until(b"still-here")[-1].topic == uplink("A", "data")
            assert not intruder.publish(uplink("B", "data"), b"as-B").is_failure
            assert ingest.expect_until(b"as-B")[-1].topic == uplink("B", "data")
            assert a.is_connected
        with broker.client("terminal", "A", "pw-A", client_id="other") as same_unit:
            same_unit.connect_ok()
            a.wait_disconnected()


def test_last_will_on_another_terminals_topic_is_not_delivered(broker, ingest):
    # Mosquitto 2.0 accepts the CONNECT and checks the will when it fires.
    victim = uplink("B", "death")
    with broker.client("terminal", "A", "pw-A") as a:
        a.connect_ok(will=(victim, b"fake-death"))
        log_size = len(broker.log_text())
        a.drop_link()
        # The broker handles the will in the same step as the closed socket.
        broker.wait_for_log("Client A closed its connection", after=log_size)
    with terminal(broker, "A") as again:
        again.publish(uplink("A", "data"), b"sentinel")
        seen = ingest.expect_until(b"sentinel")
    assert [m.payload for m in seen] == [b"sentinel"]


def test_own_last_will_is_delivered(broker, ingest):
    death = uplink("A", "death")
    with broker.client("terminal", "A", "pw-A") as a:
        a.connect_ok(will=(death, b"death"))
        a.drop_link()
    msg = ingest.expect()
    assert (msg.topic, msg.payload) == (death, b"death")
