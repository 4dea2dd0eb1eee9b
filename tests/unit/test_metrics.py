"""/readyz (database, broker, time-series store) and the Prometheus metrics
of the web app and of the ingest exporter, scraped over real HTTP/WSGI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cloud import db
from cloud.demo.procs import free_port
from cloud.ingest.__main__ import parser as ingest_parser
from cloud.ingest.counters import Counters, Reject
from cloud.ingest.metrics import serve_ingest
from cloud.models import Delivery, DeliveryChannel, DeliveryStatus
from cloud.timeseries.influx import InfluxStore
from cloud.timeseries.influx_wire import InfluxClient
from tests.support.api import bearer, issue_tokens
from tests.support.mqtt_peer import ConnackPeer
from tests.support.web import T0, make_app

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


ACCEPTED, REFUSED = b"\x20\x02\x00\x00", b"\x20\x02\x00\x05"


def test_readyz_ok_when_everything_answers(world: Any, clock: Any) -> None:
    broker = ConnackPeer(ACCEPTED)
    app = make_app(world, clock, mqtt_port=broker.port, mqtt_password="pw-web")
    r = app.test_client().get("/readyz")
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["status"] == "ready"
    assert {k: v["ok"] for k, v in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "timeseries": True,
    }
    broker.join()
    assert broker.credentials() == ("web", "pw-web")  # the publisher's own account


def test_readyz_503_names_the_broker_when_it_is_down_or_not_ours(world: Any, clock: Any) -> None:
    app = make_app(world, clock, mqtt_port=free_port())  # nothing listens there
    foreign = ConnackPeer(REFUSED)  # answers MQTT, but does not know our account
    other = make_app(world, clock, mqtt_port=foreign.port)
    for candidate in (app, other):
        r = candidate.test_client().get("/readyz")
        body = r.get_json()
        assert r.status_code == 503 and body["status"] == "unavailable"
        assert body["checks"]["broker"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["broker"]["error"] == "PermissionError"


def test_readyz_503_when_the_timeseries_store_is_down(world: Any, clock: Any) -> None:
    dead = InfluxStore(InfluxClient(f"http://127.0.0.1:{free_port()}", "", "", 1.0), "mm")
    broker = ConnackPeer(ACCEPTED)
    app = make_app(world, clock, mqtt_port=broker.port, store=dead)
    r = app.test_client().get("/readyz")
    body = r.get_json()
    assert r.status_code == 503
    assert body["checks"]["timeseries"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True


def test_web_metrics_latency_outbox_and_alarms(client: Any, world: Any) -> None:
    token = issue_tokens(world)["operator"]
    for _ in range(3):
        assert client.get("/api/v1/terminals", headers=bearer(token)).status_code == 200
    with world.session() as s:
        for i, status in enumerate(
            (DeliveryStatus.QUEUED, DeliveryStatus.QUEUED, DeliveryStatus.DEAD)
        ):
            s.add(
                Delivery(
                    customer_id=world.ids["customer_a"],
                    event="test",
                    dedup_key=f"metrics-test-{i}",
                    channel=DeliveryChannel.EMAIL,
                    recipient="duty@acme.test",
                    payload={},
                    status=status,
                    attempts=0,
                    created_at=T0,
                    next_attempt_at=T0 - timedelta(seconds=90)
                    if status == DeliveryStatus.QUEUED
                    else None,
                )
            )
        s.commit()
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    got = samples(r.get_data(as_text=True))
    key = (
        "mimamori_http_request_duration_seconds_count",
        (("endpoint", "api.list_terminals"), ("method", "GET"), ("status", "200")),
    )
    assert got[key] == 3
    assert got[("mimamori_outbox_depth", (("status", "queued"),))] == 2
    assert got[("mimamori_outbox_depth", (("status", "dead"),))] == 1
    assert got[("mimamori_outbox_depth", (("status", "failed"),))] == 0
    assert got[("mimamori_outbox_oldest_due_seconds", ())] == 90
    assert got[("mimamori_alarms_open", (("severity", "warning"), ("state", "raised")))] == 1
    assert got[("mimamori_alarms_open", (("severity", "alarm"), ("state", "raised")))] == 1
    assert got[("mimamori_alarms_open", (("severity", "alarm"), ("state", "acknowledged")))] == 0


def test_two_apps_in_one_process_have_separate_registries(world: Any, clock: Any) -> None:
    a, b = make_app(world, clock), make_app(world, clock)
    a.test_client().get("/healthz")
    text = b.test_client().get("/metrics").get_data(as_text=True)
    assert 'endpoint="healthz"' not in text


def test_ingest_exporter_serves_the_worker_counters() -> None:
    counters = Counters()
    counters.count_received(7)
    counters.add_batch(
        stored_frames=5,
        stored_values=30,
        duplicates=1,
        historical=2,
        deferred=0,
        lag_s=0.25,
        rejects=[Reject(T0, "mm/v1/T1/up/data", "decode", "bad CBOR")],
    )
    port = free_port()
    server, thread = serve_ingest(counters, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            got = samples(resp.read().decode())
        assert got[("mimamori_ingest_received_total", ())] == 7
        assert got[("mimamori_ingest_stored_values_total", ())] == 30
        assert got[("mimamori_ingest_duplicates_total", ())] == 1
        assert got[("mimamori_ingest_rejected_total", (("reason", "decode"),))] == 1
        assert got[("mimamori_ingest_lag_seconds", ())] == 0.25
        counters.count_received(3)  # read at scrape time, not copied at start
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            assert samples(resp.read().decode())[("mimamori_ingest_received_total", ())] == 10
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_ingest_command_takes_a_metrics_port() -> None:
    args = ingest_parser().parse_args(["--metrics-port", "9464"])
    assert args.metrics_port == 9464 and args.metrics_host == "127.0.0.1"
    assert ingest_parser().parse_args([]).metrics_port is None


def test_ingest_without_its_password_does_not_start(monkeypatch: Any, caplog: Any) -> None:
    from cloud.ingest.__main__ import main as ingest_main

    monkeypatch.delenv("MIMAMORI_INGEST_MQTT_PASSWORD", raising=False)
    assert ingest_main(["--port", str(free_port())]) == 2
    assert "$MIMAMORI_INGEST_MQTT_PASSWORD is not set" in caplog.text


def test_ingest_process_serves_metrics_while_it_runs(tmp_path: Path) -> None:
    """``python -m cloud.ingest --metrics-port``: the exporter is up while the
    worker runs (here still waiting for its broker) and goes away with it."""
    url = f"sqlite:///{tmp_path / 'ingest.sqlite3'}"
    db.upgrade(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMAMORI_")}
    env["MIMAMORI_DATABASE_URL"] = url
    env["MIMAMORI_INGEST_MQTT_PASSWORD"] = "never-used-here"
    log = tmp_path / "ingest.log"  # a file, not a pipe nobody drains
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloud.ingest",
                "--port",
                str(free_port()),
                "--metrics-port",
                str(port),
                "--client-id",
                "metrics-test",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        text = None
        while text is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                time.sleep(0.1)  # polling the listener, with a deadline
        assert text is not None, "no metrics; log:\n" + log.read_text()
        got = samples(text)
        assert got[("mimamori_ingest_received_total", ())] == 0
        assert ("mimamori_ingest_lag_seconds", ()) in got
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0


MONITOR = "Mq7Vx2Lp9Ks4Tn8Wd1Hb6Zr3Jf5Gc0Ye2Ua7Oi4"
OUTSIDE = {"REMOTE_ADDR": "198.51.100.7"}


def test_metrics_and_readiness_answer_only_loopback_or_the_monitoring_token(
    world: Any, clock: Any
) -> None:
    broker = ConnackPeer(ACCEPTED)
    app = make_app(world, clock, mqtt_port=broker.port, monitoring_token=MONITOR)
    client = app.test_client()
    for path in ("/metrics", "/readyz"):
        # Counts across customers and the names of dependencies: not for anyone.
        assert client.get(path, environ_base=OUTSIDE).status_code == 403, path
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.get(path, environ_base=OUTSIDE, headers=wrong).status_code == 403
        # A reverse proxy on the same host forwards outsiders: still outsiders.
        proxied = {"X-Forwarded-For": "198.51.100.7"}
        assert client.get(path, headers=proxied).status_code == 403, path
        token = {"Authorization": f"Bearer {MONITOR}"}
        assert client.get(path, environ_base=OUTSIDE, headers=token).status_code == 200, path
        assert client.get(path).status_code == 200, path  # the host itself
    assert client.get("/healthz", environ_base=OUTSIDE).status_code == 200  # says nothing


def test_readiness_checks_the_broker_once_in_a_while_not_per_request(
    world: Any, clock: Any
) -> None:
    broker = ConnackPeer(ACCEPTED)  # takes one connection only
    app = make_app(world, clock, mqtt_port=broker.port)
    client = app.test_client()
    assert [client.get("/readyz").status_code for _ in range(5)] == [200] * 5
    broker.join()
