"""A hostile HTTP endpoint on a free loopback port: it takes a request and then
answers as slowly as it likes.

    with Tarpit(mode="trickle", interval_s=0.05) as pit:
        ... POST to pit.url ...
        pit.wait_for_connections(1)
        pit.sent_bytes()        # what it managed to trickle before the client hung up

Modes:

- ``trickle``: a valid ``200`` response, one byte every ``interval_s``; a
  client whose timeout bounds each socket read, not the request, keeps
  reading for ``len(response) * interval_s`` seconds.
- ``greeting=b"220 ..."``: a server that speaks first (SMTP) trickles that
  without reading anything.
- ``hold``: read the request, answer nothing until :meth:`release` (then
  ``200``) or until the client gives up.

Every connection is counted when its request has been read, so a test can
tell "the sender is stuck on the tarpit right now" from "not yet sent".
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class Connection:
    request: bytes = b""
    sent: int = 0  # bytes of the answer written before the client went away
    closed_by_client: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Tarpit:
    def __init__(
        self,
        mode: str = "trickle",
        interval_s: float = 0.05,
        padding: int = 200,
        greeting: bytes | None = None,
    ) -> None:
        if mode not in ("trickle", "hold"):
            raise ValueError(mode)
        self.mode = mode
        self.interval_s = interval_s
        # Header lines that make the trickled answer long: a timeout per read
        # never fires, because every read gets a byte well within it.
        self.response = (
            b"HTTP/1.1 200 OK\r\n"
            + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 8) for i in range(padding // 20))
            + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        # A server that speaks first (SMTP): trickle this without reading.
        self.greeting = greeting
        if greeting is not None:
            self.response = greeting
        self.connections: list[Connection] = []
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Tarpit:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._released.set()
        for t in self._threads:
            t.join(10)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> Tarpit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def release(self) -> None:
        """Let held connections (and later ones) answer 200 at once."""
        self._released.set()

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> list[Connection]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.connections) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.connections)} connections, expected {count}")
                self._cond.wait(left)
            return list(self.connections)

    def sent_bytes(self) -> list[int]:
        with self._cond:
            return [c.sent for c in self.connections]

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        record = Connection()
        with conn:
            conn.settimeout(10)
            try:
                if self.greeting is None:
                    record.request = _read_request(conn)
            except OSError:
                return
            with self._cond:
                self.connections.append(record)
                self._cond.notify_all()
            try:
                if self.mode == "hold":
                    self._hold(conn, record)
                else:
                    self._trickle(conn, record)
            except OSError:
                record.closed_by_client = True
            record.done.set()

    def _hold(self, conn: socket.socket, record: Connection) -> None:
        conn.settimeout(0.05)
        while not self._released.is_set() and not self._stop.is_set():
            try:
                if conn.recv(1) == b"":  # the client hung up
                    record.closed_by_client = True
                    return
            except TimeoutError:
                continue
        conn.sendall(OK)
        record.sent = len(OK)

    def _trickle(self, conn: socket.socket, record: Connection) -> None:
        for i in range(len(self.response)):
            if self._stop.is_set():
                return
            conn.send(self.response[i : i + 1])
            with self._cond:
                record.sent = i + 1
            time.sleep(self.interval_s)  # the tarpit's own pace, not test synchronisation


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise OSError("closed before the request was complete")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
