"""Chat and push messages (Slack, Microsoft Teams, LINE, ntfy, Discord, ...) through Apprise.

A chat target's address is an Apprise URL (``ntfys://ntfy.example/plant-7``,
``slack://T000/B000/XXXX``, ``workflows://...``); only the HTTP-based
services in :data:`cloud.models.notifications.CHAT_SCHEMES` are accepted.
The message is the mail's subject and text (:mod:`cloud.notify.render`), in
the target's language.

The address guard holds for Apprise too. Apprise does its own HTTP (the
``requests`` module functions, hence urllib3); while :func:`send` runs, the
urllib3 connections *this thread* opens are dialled by
:func:`cloud.notify.netio.open_connection` with the lane's address guard
(:mod:`cloud.notify.netguard`) and a total deadline: the very addresses
dialled are checked, after resolution, as for webhooks. Other threads and
other callers of urllib3 are untouched (the hook does nothing without this
thread's state). When the deadline passes, every socket of the send is shut
down, which ends a server trickling its answer, TLS included.

Outcome: Apprise answers True or False only. False (the service refused or
failed) is transient: retried with backoff, dead after the retry budget; the
warnings Apprise logged go to the log. An address the guard
refuses is :class:`cloud.notify.netguard.Refused` (transient, as for webhooks:
the operator may allow it). An address Apprise cannot parse is permanent.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

import apprise
import urllib3.util.connection

from cloud.notify import netio
from cloud.notify.errors import PermanentDeliveryError, TransientDeliveryError
from cloud.notify.netguard import Refused
from cloud.notify.netio import Deadline, DeadlineExceeded, Guard

log = logging.getLogger(__name__)
_local = threading.local()
_hook_lock = threading.Lock()
_ORIGINAL = urllib3.util.connection.create_connection


class _Send:
    """The state of one send on one thread: its deadline, guard and sockets."""

    def __init__(self, deadline: Deadline, guard: Guard | None) -> None:
        self.deadline = deadline
        self.guard = guard
        self.sockets: list[socket.socket] = []
        self.refused = False
        self.timed_out = False
        self._lock = threading.Lock()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self.sockets.append(sock)

    def cut(self) -> None:
        """The deadline passed: end every exchange of this send."""
        self.timed_out = True
        with self._lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.close()


def _create_connection(
    address: tuple[str, int],
    timeout: Any = urllib3.util.connection._DEFAULT_TIMEOUT,
    source_address: tuple[str, int] | None = None,
    socket_options: Any = None,
) -> socket.socket:
    """urllib3's dialler, guarded while a send runs on this thread."""
    state: _Send | None = getattr(_local, "send", None)
    if state is None:
        return _ORIGINAL(address, timeout, source_address, socket_options)
    host, port = address
    try:
        sock = netio.open_connection(host, port, state.deadline, state.guard)
    except Refused:
        state.refused = True
        raise OSError("destination not found or not allowed") from None
    state.add(sock)
    for option in socket_options or ():
        sock.setsockopt(*option)
    return sock


def _install_hook() -> None:
    """Route urllib3's dialling through :func:`_create_connection` (once)."""
    with _hook_lock:
        if urllib3.util.connection.create_connection is not _create_connection:
            urllib3.util.connection.create_connection = _create_connection


def parse(url: str) -> Any:
    """The Apprise plugin for ``url``; raises :class:`PermanentDeliveryError`
    if Apprise cannot use it."""
    plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    if plugin is None:
        raise PermanentDeliveryError("not a chat address Apprise can use")
    return plugin


def display(url: str) -> str:
    """``url`` with its tokens masked, as Apprise shows it (for pages and logs)."""
    try:
        text = str(parse(url).url(privacy=True))
    except PermanentDeliveryError:
        return url.split("://", 1)[0] + "://…"
    return text.split("?", 1)[0]


def send(url: str, title: str, body: str, *, timeout_s: float, guard: Guard | None) -> None:
    """Post one message; returns when the service accepted it.

    Raises :class:`TransientDeliveryError` (refused or failed, retry later;
    :class:`Refused` for a guarded address) or :class:`PermanentDeliveryError`.
    """
    plugin = parse(url)
    _install_hook()
    state = _Send(Deadline(timeout_s), guard)
    timer = threading.Timer(timeout_s, state.cut)
    timer.daemon = True
    _local.send = state
    timer.start()
    try:
        with apprise.LogCapture(level=logging.WARNING) as captured:
            ok = plugin.notify(body=body, title=title)
            detail = captured.getvalue()
    except DeadlineExceeded:
        ok, detail = False, ""
        state.timed_out = True
    finally:
        _local.send = None
        timer.cancel()
        state.close()
    if state.refused:
        raise Refused()
    # The sockets' own deadline may fire before the timer: either way, late.
    if state.timed_out or time.monotonic() >= state.deadline.end:
        raise TransientDeliveryError(f"no complete answer within {timeout_s:g} s")
    if not ok:
        # Apprise's words name hosts and statuses: the operator's log gets
        # them, the customer's page a sentence that maps no network.
        log.info("chat %s: %s", display(url), " | ".join(str(detail).split("\n"))[:1000])
        raise TransientDeliveryError("the chat service refused the message or did not answer")
