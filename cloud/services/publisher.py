"""Downlink publishing for the web role: retained config frames to terminals.

The app gets a publisher object in ``app.extensions["mimamori_publisher"]``:
:class:`PahoPublisher` in production, :class:`RecordingPublisher` in unit
tests (it keeps what was published, so tests assert the exact frames).

The paho publisher opens one short MQTT connection per publish and waits for
the broker's PUBACK: config saves are rare, and a web worker then holds no
network thread or socket between requests (forked workers would otherwise
share one). The web role's broker account may only write downlink topics
(``cloud/broker/acl.py``).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.services.errors import PublishError


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        """Deliver one message to the broker; return once the broker has it
        (QoS 1 PUBACK). Raise :class:`PublishError` otherwise."""


@dataclass(frozen=True)
class Published:
    topic: str
    payload: bytes
    retain: bool
    qos: int


@dataclass
class RecordingPublisher:
    """Keeps every message; ``fail`` makes the next publishes raise (to test
    that a failed publish leaves nothing half-saved)."""

    messages: list[Published] = field(default_factory=list)
    fail: str | None = None

    def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        if self.fail is not None:
            raise PublishError(self.fail)
        self.messages.append(Published(topic, bytes(payload), retain, qos))


class PahoPublisher:
    """Publishes with paho-mqtt 2 (MQTT v5) to the broker's service listener."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        tls_ca: str = "",
        timeout_s: float = 10.0,
        client_id_prefix: str = "mimamori-web",
    ) -> None:
        self.host, self.port = host, port
        self.username, self._password = username, password
        self.tls_ca = tls_ca
        self.timeout_s = timeout_s
        self.client_id_prefix = client_id_prefix

    def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.client_id_prefix}-{secrets.token_hex(4)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if self.username:
            client.username_pw_set(self.username, self._password)
        if self.tls_ca:
            client.tls_set(ca_certs=self.tls_ca)
        connected = threading.Event()
        outcome: dict[str, Any] = {}

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            outcome["connack"] = reason
            connected.set()

        def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            outcome.setdefault("connack", reason)
            connected.set()

        published = threading.Event()

        def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
            outcome["puback"] = reason
            published.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as err:
            raise PublishError(f"broker {self.host}:{self.port} unreachable: {err}") from err
        client.loop_start()
        try:
            if not connected.wait(self.timeout_s):
                raise PublishError(f"no CONNACK from {self.host}:{self.port}")
            reason = outcome["connack"]
            if getattr(reason, "is_failure", True):
                raise PublishError(f"broker refused the connection: {reason}")
            info = client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            if not published.wait(self.timeout_s):
                raise PublishError(f"no PUBACK for {topic} within {self.timeout_s} s")
            # MQTT v5 brokers say "not authorized" in the PUBACK, not by dropping.
            if getattr(outcome["puback"], "is_failure", False):
                raise PublishError(f"broker refused {topic}: {outcome['puback']}")
        finally:
            client.disconnect()
            client.loop_stop()
