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
"""

from __future__ import annotations

import secrets
import socket
import ssl

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
        if reply[3] == 0:
            sock.sendall(DISCONNECT)
        return reply[3]


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
