"""A scripted MQTT broker for one connection: reads a CONNECT, answers ``reply``.

For the login probes (health check, /readyz): the test plays the broker and
asserts the exact exchange, as paho.mqtt.python's own tests do.
"""

from __future__ import annotations

import socket
import threading


class ConnackPeer:
    """Accepts one connection, records the CONNECT, sends ``reply`` (None:
    stays silent) and records what follows until the client closes (a
    SUBSCRIBE, a DISCONNECT, if any); it answers nothing else."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = int(self.sock.getsockname()[1])
        self.reply = reply
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            # Fixed header: type byte and a remaining length of one byte (< 128).
            while len(self.received) < 2 or len(self.received) < 2 + self.received[1]:
                chunk = conn.recv(256)
                if not chunk:
                    return
                self.received += chunk
            if self.reply is not None:
                conn.sendall(self.reply)
            try:
                while chunk := conn.recv(256):  # until the client closes
                    self.received += chunk
            except OSError:
                pass
        self.sock.close()

    def join(self) -> None:
        self.thread.join(5)

    def credentials(self) -> tuple[str, str]:
        """(username, password) of the CONNECT received."""
        pos = 2 + 10  # fixed header, protocol name, level, flags, keepalive
        fields = []
        for _ in range(3):  # client id, username, password
            n = int.from_bytes(self.received[pos : pos + 2], "big")
            fields.append(self.received[pos + 2 : pos + 2 + n].decode())
            pos += 2 + n
        return fields[1], fields[2]
