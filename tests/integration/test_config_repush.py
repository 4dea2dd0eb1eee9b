"""A config the terminal never received goes out again after the ack
deadline, end to end: the project's Mosquitto, the real agent
(``python -m edge.host``) on a simulated sensor, the ingest as a process
storing births and acks, and the ingest's re-push driver
(:class:`cloud.ingest.repush.ConfigRepusher`) run pass by pass on its own
MQTT connection with a clock the test sets, so no test waits for a deadline.

The config is lost the way a replaced broker loses it: the terminal is away
when it is published, and the retained message is gone (deleted with an
empty retained publish) before the terminal comes back, so its birth still
reports the old version. A config the terminal acknowledged is never pushed
again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud import db
from cloud.broker import account_from_row
from cloud.ingest.counters import Counters
from cloud.ingest.repush import ConfigRepusher
from cloud.models import AuditEntry, ConfigStatus, Customer, Role, Terminal, User
from cloud.services import configs
from cloud.services.publisher import PahoPublisher
from cloud.services.scope import Viewer
from protocol import topics
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import SimProcess
from tests.support.virtual_terminal import TerminalProcess, password, site_for

pytestmark = pytest.mark.integration

TID = "VR1"
WIRING = [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
FAST = {"sample": {"interval": 1}, "bus": {"timeout_ms": 200, "retries": 1}}
WAIT_S = 30.0
POLICY = configs.RepushPolicy(timedelta(minutes=10), timedelta(hours=1))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [
        account_from_row(TID, password(TID), "terminal"),
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
        account_from_row("web", "pw-web", "web"),
    ]
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


@pytest.fixture
def ingest_client(broker: MosquittoBroker) -> Iterator[mqtt.Client]:
    """A connection of the ingest account, as the worker hands its own to the driver."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="repush-test", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set("ingest", S.INGEST_PASSWORD)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(HOST, broker.ports["service"])
    client.loop_start()
    assert connected.wait(WAIT_S), "the ingest account's connection"
    yield client
    client.disconnect()
    client.loop_stop()


def test_a_lost_config_is_re_pushed_after_the_deadline_and_an_acked_one_never(
    broker: MosquittoBroker,
    ingest_client: mqtt.Client,
    insulation_sim: SimProcess,
    tmp_path: Path,
    tmp_path_factory: Any,
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        customer = Customer(name="Repush Denki", timezone="Asia/Tokyo")
        s.add(customer)
        s.flush()
        s.add(Terminal(id=TID, customer_id=customer.id, contract_start=date(2025, 1, 1)))
        user = User(email="inst@example.com", password_hash="-", role=Role.INSTALLER)
        s.add(user)
        s.commit()
        installer = Viewer(user.id, user.email, Role.INSTALLER, None)
    web = PahoPublisher(HOST, broker.ports["service"], "web", "pw-web", timeout_s=5.0)

    def terminal() -> Terminal:
        with sessions() as s:
            row = s.get(Terminal, TID)
            assert row is not None
            s.expunge(row)
            return row

    def save(heartbeat: int) -> tuple[int, datetime]:
        at = datetime.now(UTC)
        inp = configs.SettingsInput({}, None, {}, heartbeat, 60)
        with sessions() as s:
            version = configs.save(s, installer, s.get(Terminal, TID), inp, web, now=at, ip=None)
        assert version is not None
        return version, at

    counters = Counters()

    def repush_at(now: datetime) -> list[str]:
        driver = ConfigRepusher(sessions, POLICY, counters, clock=lambda: now)
        driver.client = ingest_client
        result = driver.run_once()
        assert result.error is None
        return result.repushed

    def applied(version: int) -> bool:
        t = terminal()
        return t.config_status == ConfigStatus.APPLIED and t.config_version == version

    worker = S.IngestProcess(
        broker, tmp_path, "ingest-repush", "repush", {"MIMAMORI_DATABASE_URL": url}
    ).start()
    site = site_for(TID, broker.ports["terminal"], wiring=WIRING, **FAST)
    try:
        with TerminalProcess(tmp_path / "vt", site, insulation_sim.endpoints["pty"]):
            S.wait_for(lambda: terminal().last_boot == 1, WAIT_S, "the first birth stored")
            v1, _ = save(300)
            S.wait_for(lambda: applied(v1), WAIT_S, "the terminal's ack of the first config")
            # Acknowledged: never again, however late.
            assert repush_at(datetime.now(UTC) + timedelta(days=30)) == []

        # Away: the config is published while the terminal is not connected,
        # and the broker loses its retained copy before the terminal is back.
        v2, pushed_at = save(240)
        web.publish(topics.downlink(TID, "config"), b"", retain=True)
        with TerminalProcess(tmp_path / "vt", site, insulation_sim.endpoints["pty"]):
            S.wait_for(lambda: terminal().last_boot == 2, WAIT_S, "the birth after the restart")
            t = terminal()
            assert (t.config_status, t.config_pending_version, t.config_version) == (
                ConfigStatus.PENDING,
                v2,
                v1,
            )
            assert repush_at(pushed_at + POLICY.deadline - timedelta(seconds=1)) == []
            assert repush_at(pushed_at + POLICY.deadline) == [TID]
            S.wait_for(lambda: applied(v2), WAIT_S, "the ack of the re-pushed config")
            assert repush_at(datetime.now(UTC) + timedelta(days=30)) == []
    finally:
        worker.stop()

    assert terminal().config_repushes == 1
    assert counters.snapshot()["config_repushes"] == 1
    with sessions() as s:
        acks = s.execute(
            sa.select(AuditEntry.details).where(AuditEntry.action == "terminal.config.ack")
        ).scalars()
        assert [(d["version"], d["ok"]) for d in acks] == [(v1, True), (v2, True)]
        [repush] = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == configs.REPUSH_ACTION)
        ).all()
        assert (repush.actor, repush.details["version"]) == ("system", v2)
    engine.dispose()
