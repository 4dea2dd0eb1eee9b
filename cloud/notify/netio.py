"""Outgoing connections with a total deadline.

A socket timeout bounds each read, not a request: a server that trickles one
byte of its answer every few hundred milliseconds keeps a client with a 1 s
timeout reading for as long as it likes. Here every socket of a delivery
carries a :class:`Deadline`, and before each send or receive its timeout is
set to the time left, so the request as a whole ends by the deadline
(:class:`DeadlineExceeded`, a :class:`TimeoutError`). Name resolution runs
against the same deadline.

TLS sockets made with :func:`tls_context` carry the deadline too (the
handshake itself is one call, bounded by the time left when it starts).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

AddrInfo = tuple[Any, ...]  # one entry of socket.getaddrinfo()
# Given the host name and its resolved addresses, return those that may be
# dialled, or raise (see cloud.notify.netguard).
Guard = Callable[[str, list[AddrInfo]], list[AddrInfo]]


class DeadlineExceeded(TimeoutError):
    """The deadline passed before the exchange finished."""


class Deadline:
    """A point in time (monotonic clock) by which an exchange must end."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def restart(self) -> None:
        """The same allowance again, from now (a new message on a kept connection)."""
        self.end = time.monotonic() + self.seconds

    def left(self) -> float:
        """Seconds left; raises :class:`DeadlineExceeded` when none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"no complete answer within {self.seconds:g} s")
        return left


class _Armed:
    """Mixin for socket classes: every I/O call waits at most until the deadline."""

    _deadline: Deadline | None = None

    def _arm(self) -> None:
        if self._deadline is not None:
            self.settimeout(self._deadline.left())  # type: ignore[attr-defined]

    def recv(self, *args: Any) -> Any:
        self._arm()
        return super().recv(*args)  # type: ignore[misc]

    def recv_into(self, *args: Any) -> Any:
        self._arm()
        return super().recv_into(*args)  # type: ignore[misc]

    def send(self, *args: Any) -> Any:
        self._arm()
        return super().send(*args)  # type: ignore[misc]

    def sendall(self, *args: Any) -> Any:
        self._arm()
        return super().sendall(*args)  # type: ignore[misc]


class DeadlineSocket(_Armed, socket.socket):
    pass


class DeadlineSSLSocket(_Armed, ssl.SSLSocket):
    pass


def tls_context() -> ssl.SSLContext:
    """The default verifying client context, making sockets that keep a deadline."""
    context = ssl.create_default_context()
    context.sslsocket_class = DeadlineSSLSocket
    return context


def wrap_tls(context: ssl.SSLContext, sock: socket.socket, server_hostname: str) -> ssl.SSLSocket:
    """TLS over ``sock`` (handshake included); the TLS socket keeps ``sock``'s deadline."""
    deadline = getattr(sock, "_deadline", None)
    tls = context.wrap_socket(sock, server_hostname=server_hostname)
    if isinstance(tls, DeadlineSSLSocket):
        tls._deadline = deadline
    return tls


def resolve(host: str, port: int, deadline: Deadline) -> list[AddrInfo]:
    """``getaddrinfo`` for a TCP connection, given up on at the deadline.

    The resolver has no timeout of its own that we control, so it runs in a
    helper thread; a lookup that outlives the deadline finishes there unread.
    Raises :class:`OSError` (``socket.gaierror``) or :class:`DeadlineExceeded`.
    """
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # a name, not an address literal
    box: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            box["error"] = err
        done.set()

    threading.Thread(target=lookup, name=f"resolve {host}", daemon=True).start()
    if not done.wait(deadline.left()):
        raise DeadlineExceeded(f"no address for {host} within {deadline.seconds:g} s")
    if "error" in box:
        raise box["error"]
    return list(box["infos"])


def open_connection(
    host: str, port: int, deadline: Deadline, guard: Guard | None = None
) -> DeadlineSocket:
    """A connected TCP socket to ``host:port`` that keeps ``deadline``.

    ``guard`` sees the resolved addresses first and returns those that may be
    dialled (or raises): the check happens on the addresses actually
    connected to, after resolution, so a name that resolves differently the
    second time gains nothing. Tries the permitted addresses in order.
    Raises :class:`OSError` (connection refused, unreachable, ...),
    :class:`DeadlineExceeded`, or whatever ``guard`` raises.
    """
    infos = resolve(host, port, deadline)
    if guard is not None:
        infos = guard(host, infos)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _name, address in infos:
        sock = DeadlineSocket(family, kind, proto)
        sock._deadline = deadline
        try:
            sock.settimeout(deadline.left())
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            sock.close()
            error = err
            if isinstance(err, DeadlineExceeded):
                break
    raise error
