"""Is the broker there *ours*? One MQTT 3.1.1 login with a service account.

A TCP connect, or a CONNACK to an anonymous CONNECT, proves only that
something speaks MQTT on the port: another Mosquitto (Debian's own on
1883, say) passes that. Accepting our service account's password proves
the broker holds our configuration. And a successful login leaves no
"not authorised" line in the broker's log each minute, which would bury
the refusals that matter. Stdlib sockets only: it runs in the health
checker and in web workers, with no network thread left behind.

    CONNECT  10 <len> 00 04 "MQTT" 04 <flags: user, password, clean> 00 3c
             <client id> <username> <password>      (each: 2-byte length, bytes)
    CONNACK  20 02 <session present> <return code>
    DISCONNECT e0 00                                (after code 0 only)

:func:`read_retained` also asks for one retained message (the broker's
``$SYS`` figures) after the login:

    SUBSCRIBE 82 <len> <packet id> <topic filter> 00      (QoS 0)
    SUBACK    90 03 <packet id> <granted QoS, 80 = refused>
    PUBLISH   3x <len> <topic> <payload>                  (QoS 0: no packet id)
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

CONNACK_CODES = {
    0: "accepted",
    1: "bad protocol",
    2: "id rejected",
    3: "unavailable",
    4: "bad credentials",
    5: "not authorised",
}
DISCONNECT = b"\xe0\x00"
_FLAGS = 0x80 | 0x40 | 0x02  # username, password, clean session
_KEEPALIVE_S = 60


def _string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def connect_packet(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session, username and password."""
    body = (
        _string(b"MQTT")
        + bytes([4, _FLAGS])
        + _KEEPALIVE_S.to_bytes(2, "big")
        + _string(client_id.encode())
        + _string(username.encode())
        + _string(password.encode())
    )
    return b"\x10" + _remaining_length(len(body)) + body


def login(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    timeout_s: float,
    tls: bool = False,
    tls_ca: str = "",
    client_id_prefix: str = "mimamori-probe",
) -> int:
    """Log in once and return the CONNACK return code (0: accepted), after a
    DISCONNECT when accepted. With ``tls`` the broker's certificate must
    chain to ``tls_ca`` (the system's CAs when empty) and name ``host``.

    Raises ``OSError`` (refused, unreachable, TLS failure, ``TimeoutError``)
    or ``ConnectionError`` for an answer that is not a CONNACK.
    """
    with _session(
        host,
        port,
        username,
        password,
        timeout_s=timeout_s,
        tls=tls,
        tls_ca=tls_ca,
        client_id_prefix=client_id_prefix,
    ) as (code, _sock):
        return code


def read_retained(
    host: str,
    port: int,
    username: str,
    password: str,
    topic: str,
    *,
    timeout_s: float,
    wait_s: float = 1.0,
    tls: bool = False,
    tls_ca: str = "",
    client_id_prefix: str = "mimamori-probe",
) -> tuple[int, bytes | None]:
    """Log in as :func:`login` does, then subscribe to ``topic`` and return
    (CONNACK code, payload of the first message on it). The payload is None
    when the login failed, the subscription was refused, nothing came within
    ``wait_s`` (a retained message comes at once) or the answer was not
    MQTT. Raises as :func:`login` for the login itself."""
    with _session(
        host,
        port,
        username,
        password,
        timeout_s=timeout_s,
        tls=tls,
        tls_ca=tls_ca,
        client_id_prefix=client_id_prefix,
    ) as (code, sock):
        if code != 0:
            return code, None
        body = b"\x00\x01" + _string(topic.encode()) + b"\x00"
        sock.sendall(b"\x82" + _remaining_length(len(body)) + body)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            kind, packet = _packet(sock)
            if kind >> 4 == 9 and packet[-1:] == b"\x80":  # SUBACK: refused
                break
            if kind >> 4 == 3:  # PUBLISH
                n = int.from_bytes(packet[:2], "big")
                skip = 2 + n + (2 if kind & 0x06 else 0)  # packet id above QoS 0
                return code, packet[skip:]
    return code, None  # nothing came in time, or the peer hung up


@contextmanager
def _session(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    timeout_s: float,
    tls: bool,
    tls_ca: str,
    client_id_prefix: str,
) -> Iterator[tuple[int, socket.socket]]:
    """CONNECT; yield (return code, socket); DISCONNECT if it was accepted."""
    # A fresh client id: two checks at once must not take over each other.
    packet = connect_packet(f"{client_id_prefix}-{secrets.token_hex(4)}", username, password)
    with socket.create_connection((host, port), timeout_s) as raw:
        sock: socket.socket = raw
        if tls:
            context = ssl.create_default_context(cafile=tls_ca or None)
            sock = context.wrap_socket(raw, server_hostname=host)
        sock.settimeout(timeout_s)
        sock.sendall(packet)
        reply = _read(sock, 4)
        if reply[0] != 0x20 or reply[1] != 2:
            raise ConnectionError(f"not a CONNACK: {reply.hex()}")
        try:
            yield reply[3], sock
        except (TimeoutError, ConnectionError):
            # After the login: the answer to a later question (the figure)
            # did not come or the peer hung up; the login's code stands.
            pass
        if reply[3] == 0:
            sock.settimeout(timeout_s)
            with contextlib.suppress(OSError):
                sock.sendall(DISCONNECT)


def _packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT packet: (first header byte, body)."""
    kind = _read(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        digit = _read(sock, 1)[0]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return kind, _read(sock, length)
    raise ConnectionError("malformed remaining length")


def describe(code: int) -> str:
    return f"CONNACK {code} ({CONNACK_CODES.get(code, '?')})"


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data
