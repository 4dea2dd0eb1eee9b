"""Talk to the dynamic-security plugin over MQTT: commands in, answers out.

:class:`DynsecControl` keeps one MQTT v5 connection to the terminal
listener as the admin account (the plugin serves its control topic only on
the listener it is loaded on), subscribes to the response topic and sends
batches of commands (:mod:`cloud.broker.dynsec` builds them). Each command
carries a ``correlationData`` so its answer is found among the answers the
plugin broadcasts.

Failure modes: :class:`ControlError` when the broker refuses or drops the
connection, or an answer does not come within ``timeout_s`` (then the
caller cannot know which commands were applied; commands are written so
that repeating them is harmless or fails with an error the caller expects,
e.g. "Client already exists"). A command the plugin refuses is not an
exception: its :class:`Answer` has ``error`` set.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.broker.dynsec import ADMIN_USERNAME, CONTROL_TOPIC, RESPONSE_TOPIC

# The broker refuses packets above max_packet_size (16 KiB as shipped);
# batches stay well below it.
MAX_BATCH_BYTES = 12_000
LIST_PAGE = 500  # clients per listClients answer


class ControlError(RuntimeError):
    """The broker could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Answer:
    """The plugin's answer to one command: ``error`` None means done."""

    command: str
    error: str | None
    data: dict[str, Any]


class DynsecControl:
    """A connected admin session. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        tls_ca: Path | str | None = None,
        timeout_s: float = 10.0,
        username: str = ADMIN_USERNAME,
    ) -> None:
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._answers: dict[str, Answer] = {}
        self._connack: Any = None
        self._closed = False
        # The terminal listener pins the client id to the username anyway.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=username, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._subscribed = False
        try:
            self.client.connect(host, port, keepalive=60)
        except OSError as err:
            raise ControlError(f"broker {host}:{port} unreachable: {err}") from err
        self.client.loop_start()
        with self._cond:
            ok = self._cond.wait_for(lambda: self._subscribed or self._closed, timeout_s)
        if not ok or not self._subscribed:
            self.close()
            raise ControlError(f"no admin session at {host}:{port}: {self._connack}")

    # -- paho callbacks (network thread)

    def _on_connect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self._connack = rc
        if rc.is_failure:
            client.disconnect()
            return
        client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        with self._cond:
            self._subscribed = not any(rc.is_failure for rc in codes)
            if not self._subscribed:
                self._connack = f"response topic refused: {codes}"
                self._closed = True
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        # One connection per object: a session that broke makes the caller
        # open a new one (paho would otherwise reconnect behind its back).
        client.disconnect()
        with self._cond:
            self._closed = True
            self._connack = self._connack or rc
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for r in responses:
                if isinstance(r, dict) and isinstance(r.get("correlationData"), str):
                    self._answers[r["correlationData"]] = Answer(
                        str(r.get("command", "")), r.get("error"), r.get("data") or {}
                    )
            self._cond.notify_all()

    # -- commands

    def execute(self, commands: Sequence[dict[str, Any]]) -> list[Answer]:
        """Send ``commands`` (in batches that fit a packet); answers in order.

        Raises ControlError if the session is gone or an answer is late.
        """
        answers: list[Answer] = []
        batch: list[dict[str, Any]] = []
        size = 0
        for command in commands:
            tagged = {**command, "correlationData": f"c{next(self._ids)}"}
            length = len(json.dumps(tagged))
            if batch and size + length > MAX_BATCH_BYTES:
                answers += self._send(batch)
                batch, size = [], 0
            batch.append(tagged)
            size += length + 1
        if batch:
            answers += self._send(batch)
        return answers

    def list_clients(self) -> list[dict[str, Any]]:
        """Every client with its roles and ``disabled`` flag, page by page."""
        found: list[dict[str, Any]] = []
        while True:
            (answer,) = self.execute(
                [
                    {
                        "command": "listClients",
                        "verbose": True,
                        "count": LIST_PAGE,
                        "offset": len(found),
                    }
                ]
            )
            if answer.error:
                raise ControlError(f"listClients: {answer.error}")
            page = answer.data.get("clients", [])
            found += page
            if len(page) < LIST_PAGE or len(found) >= int(answer.data.get("totalCount", 0)):
                return found

    def _send(self, batch: list[dict[str, Any]]) -> list[Answer]:
        ids = [c["correlationData"] for c in batch]
        info = self.client.publish(CONTROL_TOPIC, json.dumps({"commands": batch}), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ControlError(f"control message not sent: {mqtt.error_string(info.rc)}")
        with self._cond:
            done = self._cond.wait_for(
                lambda: self._closed or all(i in self._answers for i in ids), self.timeout_s
            )
            if not done or not all(i in self._answers for i in ids):
                raise ControlError(
                    "the broker's dynamic-security plugin did not answer"
                    + (" (session closed)" if self._closed else f" within {self.timeout_s} s")
                )
            return [self._answers.pop(i) for i in ids]

    @property
    def alive(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> DynsecControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
