"""A plain TCP forwarder: the board on the bench reaches the suite's broker.

The suite's Mosquitto listens on loopback only (tests never expose a broker
to the network by accident); a real board needs an address on the bench
network, so the board variant forwards ``broker_host:broker_port`` there.
"""

from __future__ import annotations

import socket
import threading


class Forwarder:
    """Accept on (host, port), relay each connection to (to_host, to_port)."""

    def __init__(self, host: str, port: int, to_host: str, to_port: int) -> None:
        self.target = (to_host, to_port)
        self.server = socket.create_server((host, port), reuse_port=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="forward", daemon=True)

    def __enter__(self) -> Forwarder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed by __exit__
            try:
                upstream = socket.create_connection(self.target, 5)
            except OSError:
                client.close()  # broker down: the board sees a refused connection
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass  # the other direction closed both
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
