"""Frames outside a contract or ahead of their birth survive: the real agent,
simulated sensors, the project's Mosquitto, the ingest as a process.

The terminal (``python -m edge.host``) starts a day before its contract: its
birth and data are parked (acknowledged, so it deletes them) instead of
being thrown away. The contract then starts: its new data has no birth the
cloud knows (the birth is parked), so the ingest parks it too and sends the
``rebirth`` command; the agent answers with a fresh birth, which releases
the parked data. Finally an operator releases the frames from before the
contract. A side subscriber sees every frame the terminal published; each
data frame must end in the time-series store with its values.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import (
    AuditEntry,
    Customer,
    ParkedFrame,
    Role,
    Terminal,
    TerminalCommand,
    User,
)
from cloud.services import parking
from cloud.services.scope import Viewer
from cloud.timeseries import SqlStore
from protocol import frames, topics
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker
from tests.support.sim import SimProcess
from tests.support.virtual_terminal import (
    TerminalProcess,
    Uplink,
    config_frame,
    password,
    site_for,
)

pytestmark = pytest.mark.integration

TID = "VP1"
ZONE = ZoneInfo("Asia/Tokyo")
WIRING = [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
FAST = {"sample": {"interval": 1}, "bus": {"timeout_ms": 200, "retries": 1}}
CLOUD = {"upload": 1, "heartbeat": 30}
WAIT_S = 30.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [
        account_from_row(TID, password(TID), "terminal"),
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
    ]
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


def today_in_tokyo() -> date:
    return datetime.now(UTC).astimezone(ZONE).date()


def test_parked_frames_survive_until_the_contract_and_the_birth_allow_them(
    broker: MosquittoBroker, insulation_sim: SimProcess, tmp_path: Path, tmp_path_factory: Any
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as s:
        customer = Customer(name="Parking Denki", timezone="Asia/Tokyo")
        s.add(customer)
        s.flush()
        tomorrow = today_in_tokyo() + timedelta(days=1)
        s.add(Terminal(id=TID, customer_id=customer.id, contract_start=tomorrow))
        user = User(email="op@example.com", password_hash="-", role=Role.OPERATOR)
        s.add(user)
        s.commit()
        operator = Viewer(user.id, user.email, Role.OPERATOR, None)

    def parked() -> dict[str, int]:
        with sessions() as s:
            rows = s.execute(
                sa.select(ParkedFrame.reason, sa.func.count()).group_by(ParkedFrame.reason)
            )
            return {reason: n for reason, n in rows}

    def stored_keys() -> set[tuple[str, int]]:
        return {
            (p.channel, p.ts)
            for p in SqlStore(engine).iter_points()
            if p.terminal == TID and not p.channel.startswith("$")
        }

    def rebirth_commands() -> list[tuple[str, str]]:
        with sessions() as s:
            rows = s.execute(
                sa.select(TerminalCommand.requested_by, TerminalCommand.state).where(
                    TerminalCommand.terminal_id == TID, TerminalCommand.name == "rebirth"
                )
            )
            return [(who, state) for who, state in rows]

    worker = S.IngestProcess(
        broker,
        tmp_path,
        "ingest-parking",
        "parking",
        {"MIMAMORI_DATABASE_URL": url},
        extra=["--birth-wait", "1"],
    ).start()
    observer = broker.client("service", "ingest", S.INGEST_PASSWORD, client_id="observer")
    observer.connect_ok()
    observer.subscribe(f"{topics.PREFIX}/{TID}/up/#")
    up = Uplink(observer)
    observer.publish(topics.downlink(TID, "config"), config_frame(TID, 1, CLOUD), retain=True)
    site = site_for(TID, broker.ports["terminal"], wiring=WIRING, **FAST)
    try:
        with TerminalProcess(tmp_path / "vt", site, insulation_sim.endpoints["pty"]) as vt:
            # 1. Before the contract: birth and data parked, nothing stored.
            S.wait_for(lambda: parked().get(parking.NOT_CONTRACTED, 0) >= 4, WAIT_S, "parking")
            assert stored_keys() == set()

            # 2. The contract starts today. New data has no birth the cloud
            # knows: parked, and the terminal is asked for a rebirth, whose
            # birth releases that data.
            with sessions() as s:
                s.get(Terminal, TID).contract_start = today_in_tokyo()
                s.commit()
            vt.wait_log("rebirth: ok", WAIT_S)
            # The ingest's request is in the terminal's command history, answered.
            S.wait_for(
                lambda: set(rebirth_commands()) == {("system", "succeeded")},
                WAIT_S,
                f"the rebirth command's row answered; {rebirth_commands()}",
            )
            S.wait_for(
                lambda: (
                    len(up.frames("birth")) >= 2
                    and parked().get(parking.NO_BIRTH, 0) == 0
                    and bool(stored_keys())
                ),
                WAIT_S,
                f"data released by the fresh birth; parked {parked()}",
            )
            assert parked().get(parking.NOT_CONTRACTED, 0) >= 4  # still waiting for a person

            # 3. An operator releases what came before the contract.
            with sessions() as s:
                n = parking.request_release(
                    s, operator, TID, reason=None, now=datetime.now(UTC), ip="192.0.2.1"
                )
            assert n >= 4
            S.wait_for(lambda: parked() == {}, WAIT_S, f"release; parked {parked()}")
            vt.stop()
        names = {c["alias"]: c["name"] for c in up.frames("birth")[0]["channels"]}
        sent = {
            (names[alias], ts)
            for f in up.frames("data")
            for ts, sample in zip(frames.sample_times(f), f["samples"], strict=True)
            for alias, raw in enumerate(sample["values"])
            if raw is not None
        }
        assert sent, "the terminal sent data"
        S.wait_for(lambda: sent <= stored_keys(), WAIT_S, "every data frame stored")
    finally:
        worker.stop()
        observer.close()

    with sessions() as s:
        actions = set(s.scalars(sa.select(AuditEntry.action).where(AuditEntry.object_id == TID)))
    assert {"terminal.cmd.rebirth", "terminal.parked.release"} <= actions
    assert worker.total("parked") >= 5
    assert worker.total("rebirths") >= 1
    engine.dispose()
