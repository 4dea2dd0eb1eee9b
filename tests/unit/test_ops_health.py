"""Component checks against scripted peers: an MQTT broker played by the
test, a real HTTP server, and checks that hang or raise."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from cloud.ops.health import Status, check_http, check_mqtt, run_checks
from tests.support.mqtt_peer import ConnackPeer


@pytest.mark.parametrize(
    ("reply", "ok", "detail"),
    [
        (b"\x20\x02\x00\x00", True, "CONNACK 0 (accepted)"),
        # Refusing our account: another broker on the port, or ours without our config.
        (b"\x20\x02\x00\x05", False, "CONNACK 5 (not authorised): not our broker"),
        (b"\x20\x02\x00\x04", False, "CONNACK 4 (bad credentials): not our broker"),
        (b"\x20\x02\x00\x03", False, "CONNACK 3 (unavailable)"),
    ],
)
def test_mqtt_check_logs_in_with_the_monitor_account(reply, ok, detail):
    peer = ConnackPeer(reply)
    status = check_mqtt("127.0.0.1", peer.port, 2.0, username="monitor", password="pw-m")()
    peer.join()
    assert status.ok is ok and status.detail.startswith(detail)
    assert peer.credentials() == ("monitor", "pw-m")
    # CONNECT, MQTT 3.1.1, flags: username, password, clean session
    assert (peer.received[0], peer.received[8], peer.received[9]) == (0x10, 4, 0xC2)
    if ok:
        # It asks for the broker's client count; this peer never answers, so
        # there is no figure, and the check is up all the same.
        assert b"$SYS/broker/clients/connected" in peer.received
        assert status.figures == {}
        assert peer.received.endswith(b"\xe0\x00")  # polite DISCONNECT


def test_mqtt_check_of_a_closed_port_raises_and_a_silent_peer_times_out():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        check_mqtt("127.0.0.1", port, 1.0, username="monitor", password="x")()
    silent = ConnackPeer(None)
    with pytest.raises(TimeoutError):
        check_mqtt("127.0.0.1", silent.port, 0.3, username="monitor", password="x")()
    non_mqtt = ConnackPeer(b"HTTP/1.1 400 Bad\r\n")
    with pytest.raises(ConnectionError, match="not a CONNACK"):
        check_mqtt("127.0.0.1", non_mqtt.port, 2.0, username="monitor", password="x")()


def test_the_broker_check_without_its_password_stops_the_start():
    from cloud.errors import ConfigError
    from cloud.ops.health import build_checks
    from cloud.ops.settings import OpsSettings

    with pytest.raises(ConfigError, match="MIMAMORI_MONITOR_MQTT_PASSWORD"):
        build_checks(None, OpsSettings(components=("broker",)), None, None)  # type: ignore[arg-type]
    loaded = OpsSettings.load(env={"MIMAMORI_MONITOR_MQTT_PASSWORD": "pw-m"})
    assert loaded.broker_password == "pw-m" and "pw-m" not in repr(loaded)


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
