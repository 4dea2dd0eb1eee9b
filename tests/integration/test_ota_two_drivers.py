"""Several ingest workers (processes, as production runs them) on one
Mosquitto and one PostgreSQL database all run the rollout driver; only one
of them drives at a time (the ``ota-driver`` lease, with conditional
transitions as the fence), so nothing is done twice, and when the driver
dies another takes over.

Three host agents, waves ``2,100%``, all trusting another key, so each
refuses the bundle: the first wave's two failures pause the rollout before
the third terminal is offered anything. Each worker passes every 20 ms, so
two unfenced drivers overlap on nearly every offer and on the pause (without
the lease this test failed three runs out of three). Then the driver is
killed and the rollout resumed: the other worker takes over, offers the
third terminal and pauses after its failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import AuditEntry, TerminalCommand
from cloud.models.ops import SchedulerLease
from cloud.models.ota import OtaTarget
from cloud.services import ota
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker
from tests.support.ota import OTHER, seed_fleet
from tests.support.virtual_terminal import TerminalProcess, password, site_for

pytestmark = pytest.mark.integration

TIDS = ("OD1", "OD2", "OD3")
WAIT_S = 40.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [account_from_row(t, password(t), "terminal") for t in TIDS]
    accounts.append(account_from_row("ingest", S.INGEST_PASSWORD, "ingest"))
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


def test_two_ingest_workers_offer_once_and_pause_once(
    broker: MosquittoBroker, tmp_path: Path, pg_url: str
) -> None:
    db.upgrade(pg_url)
    engine = db.make_engine(pg_url)
    sessions = db.session_factory(engine)
    now = datetime.now(UTC)
    with sessions() as s:
        _customer, operator, bundle = seed_fleet(s, "Futari Denki", TIDS, tmp_path / "b", now)
        rollout_id = ota.start_rollout(
            s,
            operator,
            bundle_pk=bundle.id,
            terminal_ids=list(TIDS),
            waves="2,100%",
            threshold_pct=20,
            confirm_s=30,
            now=now,
            ip=None,
        ).id

    def rollout_state() -> str:
        with sessions() as s:
            return ota.rollout_detail(s, operator, rollout_id)[0].state

    def driving(w: S.IngestProcess) -> bool:
        return "ota: driving rollouts" in (w.dir / "worker.log").read_text()

    env = {"MIMAMORI_DATABASE_URL": pg_url}
    extra = ["--ota-advance", "0.02", "--ota-lease", "1"]
    workers = [
        S.IngestProcess(broker, tmp_path, cid, "ota2", env, extra=extra)
        for cid in ("ingest-a", "ingest-b")
    ]
    terminals = []
    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(S.IngestProcess.start, workers))
        for tid in TIDS:
            vt = TerminalProcess(
                tmp_path / tid, site_for(tid, broker.ports["terminal"], wiring=[]), None, ("--ota",)
            )
            vt.state_dir.mkdir(parents=True, exist_ok=True)
            untrusted = OTHER.verify_key.encode().hex()
            (vt.state_dir / "ota_keys.json").write_text(json.dumps({"keys": [untrusted]}))
            vt.start()
            terminals.append(vt)
        S.wait_for(lambda: rollout_state() == "paused", WAIT_S, "the pause after wave 1 failed")
        (first,) = [w for w in workers if driving(w)]  # the other one stood by
        # The driver dies without a word; the standby takes over once the
        # lease has expired. (The dead one's session is dropped, or the broker
        # would keep a share of the terminals' frames for it.)
        first.kill()
        first.forget_session()
        with sessions() as s:
            ota.set_state(s, operator, rollout_id, "resume", now=datetime.now(UTC), ip=None)
        S.wait_for(lambda: rollout_state() == "paused", WAIT_S, "the pause after wave 2 failed")
        assert all(driving(w) for w in workers)
    finally:
        for vt in terminals:
            vt.stop()
        # Stopped (each finishes its pass) before counting: a second driver's
        # late pause or offer would be in the database by then.
        with ThreadPoolExecutor(len(workers)) as pool:
            list(pool.map(S.IngestProcess.stop, workers))
    with sessions() as s:
        offers = s.scalars(
            sa.select(TerminalCommand.terminal_id)
            .where(TerminalCommand.name == "ota")
            .order_by(TerminalCommand.terminal_id)
        ).all()
        assert offers == ["OD1", "OD2", "OD3"]
        pauses = s.execute(
            sa.select(AuditEntry.actor, AuditEntry.details)
            .where(AuditEntry.action == "ota.rollout.pause")
            .order_by(AuditEntry.id)
        ).all()
        assert [(actor, d["reason"][:6]) for actor, d in pauses] == [
            ("system", "wave 1"),
            ("system", "wave 2"),
        ]
        states = s.scalars(
            sa.select(OtaTarget.state).where(OtaTarget.rollout_id == rollout_id)
        ).all()
        assert states == ["failed"] * 3
        # A clean stop hands the lease back, so a standby need not wait out its TTL.
        assert s.get(SchedulerLease, "ota-driver") is None  # nobody left
    engine.dispose()
