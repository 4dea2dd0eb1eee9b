"""The terminal TLS listener: trusted with the test CA, refused with any other."""

from __future__ import annotations

import socket
import ssl

import pytest

from cloud.broker import account_from_row
from protocol.topics import uplink
from tests.support.broker import (
    HOST,
    Client,
    MosquittoBroker,
    MQTTv5,
    MQTTv311,
    connected,
    tls_context,
)

pytestmark = pytest.mark.integration

ACCOUNTS = [account_from_row("A", "pw-A", "terminal")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with MosquittoBroker(tmp_path_factory.mktemp("broker-tls"), ACCOUNTS, tls=True) as b:
        yield b


@pytest.mark.parametrize("protocol", [MQTTv5, MQTTv311], ids=["v5", "v311"])
def test_tls_with_the_test_ca_works(broker, protocol):
    with connected(broker, "terminal_tls", "A", "pw-A", protocol=protocol) as a:
        sock = a.mqtt.socket()
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert not a.publish(uplink("A", "data"), b"over-tls").is_failure


def test_tls_with_a_wrong_ca_fails(broker):
    assert broker.pki is not None
    client = broker.client("terminal_tls", "A", "pw-A", tls_ca=broker.pki.wrong_ca)
    with client, pytest.raises(ssl.SSLCertVerificationError):
        client.connect()


def test_tls_hostname_must_match_the_certificate(broker):
    # The test certificate names 127.0.0.1 and localhost, nothing else.
    assert broker.pki is not None
    ctx = tls_context(broker.pki.ca)
    with (
        socket.create_connection((HOST, broker.ports["terminal_tls"]), 5) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
    ):
        ctx.wrap_socket(raw, server_hostname="broker.example.com")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused_by_the_broker(broker):
    assert broker.pki is not None
    ctx = tls_context(broker.pki.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    log_size = len(broker.log_text())
    with (
        socket.create_connection((HOST, broker.ports["terminal_tls"]), 5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        ctx.wrap_socket(raw, server_hostname=HOST)
    # The refusal is the broker's, not a client that could not speak TLS 1.1.
    broker.wait_for_log("unsupported protocol", after=log_size)


def test_plain_mqtt_on_the_tls_port_gets_no_session(broker):
    client = Client(HOST, broker.ports["terminal_tls"], "A", "pw-A", tls_ca=None)
    with client, pytest.raises(ConnectionError, match="closed before CONNACK"):
        client.connect()
