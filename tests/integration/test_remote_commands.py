"""Remote commands end to end: the service the site and the API call
(:mod:`cloud.services.commands`) publishing through the web role's broker
account, the project's Mosquitto, the real agent (``python -m edge.host``)
on simulated sensors, and the ingest (as a process) recording its answers.
Each command must go queued -> delivered -> succeeded with the terminal's
own result."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import AuditEntry, Customer, Role, Terminal, TerminalCommand, User
from cloud.services import commands
from cloud.services.publisher import PahoPublisher
from cloud.services.scope import Viewer
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import SimProcess
from tests.support.virtual_terminal import TerminalProcess, password, site_for

pytestmark = pytest.mark.integration

TID = "VC1"
WIRING = [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
FAST = {"sample": {"interval": 1}, "bus": {"timeout_ms": 200, "retries": 1}}
WAIT_S = 30.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [
        account_from_row(TID, password(TID), "terminal"),
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
        account_from_row("web", "pw-web", "web"),
    ]
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


def test_sample_now_rebirth_resync_and_reboot_reach_the_agent_and_come_back(
    broker: MosquittoBroker, insulation_sim: SimProcess, tmp_path: Path, tmp_path_factory: Any
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        customer = Customer(name="Command Denki", timezone="Asia/Tokyo")
        s.add(customer)
        s.flush()
        s.add(Terminal(id=TID, customer_id=customer.id, contract_start=date(2025, 1, 1)))
        user = User(email="inst@example.com", password_hash="-", role=Role.INSTALLER)
        s.add(user)
        s.commit()
        installer = Viewer(user.id, user.email, Role.INSTALLER, None)
    publisher = PahoPublisher(HOST, broker.ports["service"], "web", "pw-web", timeout_s=5.0)

    def terminal() -> Terminal:
        with sessions() as s:
            row = s.get(Terminal, TID)
            assert row is not None
            return row

    def run(name: str, args: dict[str, Any] | None = None) -> TerminalCommand:
        with sessions() as s:
            cmd = commands.send(
                s, installer, TID, name, args, publisher=publisher, now=datetime.now(UTC), ip=None
            )
            assert (cmd.state, cmd.error) == ("delivered", ""), cmd.error
            cmd_id = cmd.id

        def answered() -> TerminalCommand | None:
            with sessions() as s:
                row = s.get(TerminalCommand, cmd_id)
                return row if row is not None and row.answered_at is not None else None

        done = S.wait_for(answered, WAIT_S, f"the answer to {name}")
        assert done.state == "succeeded", (name, done.result)
        return done

    worker = S.IngestProcess(
        broker, tmp_path, "ingest-cmd", "cmd", {"MIMAMORI_DATABASE_URL": url}
    ).start()
    site = site_for(TID, broker.ports["terminal"], wiring=WIRING, **FAST)
    try:
        with TerminalProcess(tmp_path / "vt", site, insulation_sim.endpoints["pty"]) as vt:
            S.wait_for(lambda: terminal().last_boot == 1, WAIT_S, "the first birth stored")

            sampled = run("sample_now")
            assert sampled.result == {"channels": 3}  # io, ior, v of the insulation monitor

            seen = terminal().last_seen_at
            run("rebirth")
            S.wait_for(
                lambda: terminal().last_seen_at != seen and terminal().last_boot == 1,
                WAIT_S,
                "the fresh birth",
            )

            synced = run("resync_clock", {"time": int(time.time())})
            assert synced.result["source"] == "cloud"

            run("reboot")
            S.wait_for(lambda: terminal().last_boot == 2, WAIT_S, "the birth after the reboot")
            vt.wait_log("rebooting")
    finally:
        worker.stop()

    with sessions() as s:
        sent = s.scalars(
            sa.select(AuditEntry.details["name"]).where(AuditEntry.action == "terminal.cmd.send")
        ).all()
        results = s.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "terminal.cmd.result")
        )
    assert [str(n).strip('"') for n in sent] == ["sample_now", "rebirth", "resync_clock", "reboot"]
    assert results == 4
    engine.dispose()
