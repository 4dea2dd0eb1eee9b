"""The InfluxDB client's connection handling, against a small local HTTP server
that drops each keep-alive connection after one answer (as a server restart or
an idle timeout does)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from cloud.demo.procs import free_port
from cloud.errors import TimeseriesError
from cloud.timeseries.influx_wire import InfluxClient


class _OneAnswerPerConnection(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # the client keeps the connection for the next request
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        size = int(self.headers["Content-Length"])
        self.bodies.append(self.rfile.read(size))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True  # without saying so: the client finds out on reuse

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    _OneAnswerPerConnection.bodies = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneAnswerPerConnection)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_a_write_on_a_connection_the_server_dropped_goes_again_on_a_new_one(server):
    client = InfluxClient(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    for n in range(3):
        client.write("db", [f"m v={n}"])
        finish = client.send_write("db", [f"m v={n + 10}"])
        finish()
    client.close()
    assert _OneAnswerPerConnection.bodies == [
        f"m v={n}\n".encode() for k in range(3) for n in (k, k + 10)
    ]


def test_a_started_write_to_nobody_fails_when_waited_for():
    finish = InfluxClient(f"http://127.0.0.1:{free_port()}", timeout=2).send_write("db", ["m v=1"])
    with pytest.raises(TimeseriesError, match="unreachable"):
        finish()
