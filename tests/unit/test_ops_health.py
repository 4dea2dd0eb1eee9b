"""Component checks against scripted peers: an MQTT broker played by the
test, a real HTTP server, and checks that hang or raise."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from cloud.ops.health import CONNECT, Status, check_http, check_mqtt, run_checks


class Peer:
    """A one-connection TCP server that records what it got and sends ``reply``."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            while len(self.received) < len(CONNECT):
                chunk = conn.recv(256)
                if not chunk:
                    return
                self.received += chunk
            if self.reply is not None:
                conn.sendall(self.reply)
            try:
                # DISCONNECT, if sent; a silent peer just waits for the client to go.
                self.received += conn.recv(16)
            except OSError:
                pass
        self.sock.close()


@pytest.mark.parametrize(
    ("reply", "ok", "detail"),
    [
        (b"\x20\x02\x00\x00", True, "CONNACK 0 (accepted)"),
        (b"\x20\x02\x00\x05", True, "CONNACK 5 (not authorised)"),  # serving, login refused
        (b"\x20\x02\x00\x03", False, "CONNACK 3 (unavailable)"),
        (b"HTTP", False, "not a CONNACK"),
    ],
)
def test_mqtt_check_sends_a_connect_and_reads_the_connack(reply, ok, detail):
    peer = Peer(reply)
    status = check_mqtt("127.0.0.1", peer.port, 2.0)()
    peer.thread.join(5)
    assert (status.ok, status.detail.split(":")[0]) == (ok, detail.split(":")[0])
    assert peer.received.startswith(CONNECT)
    assert peer.received[:2] == b"\x10" + bytes([len(CONNECT) - 2])
    if reply == b"\x20\x02\x00\x00":
        assert peer.received.endswith(b"\xe0\x00")  # polite DISCONNECT


def test_mqtt_check_of_a_closed_port_raises_and_a_silent_peer_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        check_mqtt("127.0.0.1", port, 1.0)()
    silent = Peer(None)
    with pytest.raises(TimeoutError):
        check_mqtt("127.0.0.1", silent.port, 0.3)()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = int(self.path.strip("/"))
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("code", "ok"), [(200, True), (302, True), (404, True), (500, False), (503, False)]
)
def test_http_check_counts_any_answer_below_500_as_serving(web, code, ok):
    status = check_http(f"{web}/{code}", 2.0)()
    assert status == Status(ok, f"HTTP {code}")


def test_run_checks_survives_exceptions_and_hung_checks():
    release = threading.Event()

    def hangs() -> Status:
        release.wait(10)
        return Status(True)

    def boom() -> Status:
        raise ConnectionRefusedError("refused")

    started = time.monotonic()
    try:
        results = run_checks(
            {"web": hangs, "broker": boom, "database": lambda: Status(True, "")}, timeout_s=0.5
        )
    finally:
        release.set()
    assert time.monotonic() - started < 3
    by = {r.component: r for r in results}
    assert [r.component for r in results] == ["broker", "database", "web"]
    assert by["database"].ok
    assert not by["broker"].ok and by["broker"].detail == "ConnectionRefusedError: refused"
    assert not by["web"].ok and "no answer within 0.5 s" in by["web"].detail
