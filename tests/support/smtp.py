"""A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives.

    with SmtpSink() as sink:
        ... send to 127.0.0.1:sink.port ...
        sink.wait_for(3)                    # polls with a deadline, no sleeps
        sink.messages[0]["Subject"]
        sink.stop(); ...; sink.start()       # an outage, then the same port again

``reply`` makes the server answer DATA with a given SMTP reply (for example
``"451 4.3.0 try later"`` or ``"550 5.1.1 no such user"``) instead of
accepting: a server that is up but refuses.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from cloud.demo.procs import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    def __getitem__(self, header: str) -> Any:
        return self.message[header]

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self.sink.reply
        if reply is not None:
            return reply
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.sink._add(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg))
        return "250 OK"


class SmtpSink:
    """The server; :meth:`start` picks a free port once and reuses it after :meth:`stop`."""

    def __init__(self) -> None:
        self.port = 0
        self.reply: str | None = None
        self._received: list[Received] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> SmtpSink:
        if self._controller is not None:
            return self
        if not self.port:
            self.port = free_port()
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, ready_timeout=10
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        self._wait_closed()

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def messages(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least ``count`` messages arrived; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"SMTP sink got {len(self._received)} messages, expected {count}"
                    )
                self._cond.wait(left)
            return list(self._received)

    def _add(self, item: Received) -> None:
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()

    def _wait_closed(self, timeout: float = 10.0) -> None:
        # The outage must be real: connecting has to fail before we return.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.02)
        raise AssertionError(f"SMTP sink still accepting on port {self.port}")

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
