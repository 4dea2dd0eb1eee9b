"""Packet size limit, persistence across restarts, shared-subscription split."""

from __future__ import annotations

import contextlib
import queue
import time

import pytest

from cloud.broker import account_from_row
from cloud.broker.acl import shared_uplink_filter
from cloud.broker.settings import MAX_PACKET_SIZE
from cloud.demo.procs import free_port
from protocol.limits import MAX_FRAME_BYTES
from protocol.topics import downlink, downlink_filter, uplink
from tests.support.broker import MosquittoBroker, MQTTv5, MQTTv311, connected

pytestmark = pytest.mark.integration

ACCOUNTS = [
    account_from_row("A", "pw-A", "terminal"),
    account_from_row("B", "pw-B", "terminal"),
    account_from_row("ingest", "pw-ingest", "ingest"),
    account_from_row("web", "pw-web", "web"),
]
PACKET_TOO_LARGE = 0x95


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker-limits"), ACCOUNTS) as b:
        yield b


@pytest.fixture
def ingest(broker):
    with connected(broker, "service", "ingest", "pw-ingest") as client:
        client.subscribe(shared_uplink_filter())
        yield client


def test_v5_clients_are_told_the_packet_limit(broker):
    with connected(broker, "terminal", "A", "pw-A") as a:
        props = a.connack_props
    assert props is not None
    assert props.MaximumPacketSize == MAX_PACKET_SIZE
    assert MAX_PACKET_SIZE >= 2 * MAX_FRAME_BYTES


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
def test_largest_protocol_frame_passes(broker, ingest, protocol):
    frame = bytes(range(256)) * (MAX_FRAME_BYTES // 256)
    with connected(broker, "terminal", "A", "pw-A", protocol=protocol) as a:
        assert not a.publish(uplink("A", "data"), frame).is_failure
    assert ingest.expect().payload == frame


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
def test_oversized_packet_disconnects_and_is_not_delivered(broker, ingest, protocol):
    with connected(broker, "terminal", "A", "pw-A", protocol=protocol) as a:
        # paho does not enforce the limit itself, so the packet reaches the broker.
        a.mqtt.publish(uplink("A", "data"), b"x" * MAX_PACKET_SIZE, qos=1)
        reason = a.wait_disconnected()
        if protocol == MQTTv5:
            assert reason is not None and reason.value == PACKET_TOO_LARGE
    with connected(broker, "terminal", "B", "pw-B") as b:
        b.publish(uplink("B", "data"), b"sentinel")
    assert [m.payload for m in ingest.expect_until(b"sentinel")] == [b"sentinel"]
    assert "disconnected due to oversize packet" in broker.log_text()


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
def test_queued_downlink_survives_broker_restart(tmp_path, protocol):
    """A terminal offline with a persistent session gets the cloud's QoS 1
    commands after the broker restarted in between (persistence on)."""
    with MosquittoBroker(tmp_path, ACCOUNTS) as broker:
        # umqtt (v3.1.1) keeps its session with clean_session=False; v5
        # clients need a session expiry interval.
        session = {"protocol": protocol, "clean": False, "client_id": "A", "session_expiry": 3600}
        with connected(broker, "terminal", "A", "pw-A", **session) as a:
            a.subscribe(downlink_filter("A"), qos=1)
        with connected(broker, "service", "web", "pw-web") as web:
            for n in range(3):
                assert not web.publish(downlink("A", "cmd"), b"cmd%d" % n).is_failure
        broker.restart()
        with connected(broker, "terminal", "A", "pw-A", **session) as a:
            assert a.session_present
            got = [a.expect().payload for _ in range(3)]
    assert got == [b"cmd0", b"cmd1", b"cmd2"]


def test_retained_config_survives_restart_and_service_port_change(tmp_path):
    """Retained config must outlive a restart, and moving the service
    listener to another port must not withhold it (check_retain_source off)."""
    with MosquittoBroker(tmp_path, ACCOUNTS) as broker:
        with connected(broker, "service", "web", "pw-web") as web:
            assert not web.publish(downlink("A", "config"), b"cfg-1", retain=True).is_failure
        broker.stop()
        broker.ports["service"] = free_port()
        broker.start()
        with connected(broker, "terminal", "A", "pw-A") as a:
            a.subscribe(downlink_filter("A"))
            msg = a.expect()
    assert (msg.payload, msg.retain) == (b"cfg-1", True)


def collect(workers, total, timeout=10.0):
    """Payloads per worker until ``total`` messages arrived across all of them."""
    got = [[] for _ in workers]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {sum(map(len, got))} of {total} arrived: {got}")
        for worker, into in zip(workers, got, strict=True):
            with contextlib.suppress(queue.Empty):
                into.append(worker.messages.get(timeout=0.02).payload)
    return got


def test_two_ingest_workers_in_one_group_split_the_uplink(broker):
    count = 40
    with (
        connected(broker, "service", "ingest", "pw-ingest") as w1,
        connected(broker, "service", "ingest", "pw-ingest") as w2,
    ):
        for worker in (w1, w2):
            worker.subscribe(shared_uplink_filter())
        with connected(broker, "terminal", "A", "pw-A") as a:
            for n in range(count):
                a.publish(uplink("A", "data"), b"%d" % n)
        got1, got2 = collect((w1, w2), count)
    assert got1 and got2, "both workers must get a share"
    assert sorted(got1 + got2, key=int) == [b"%d" % n for n in range(count)]  # each once
