"""An update rollout end to end through the real parts: the services the site
and the API call, the project's Mosquitto with its ACLs, the ingest (as a
process) serving chunks and driving the waves, and the real agent
(``python -m edge.host --ota``, which follows the boot loader's choice as a
board does) downloading, verifying, switching and confirming.

Three terminals, waves ``1,1,100%``: the first updates and confirms; the
second trusts another key, refuses the bundle, and its wave's failure
pauses the rollout before the third is offered anything; resumed, the third
updates. The virtual-board tests (tests/integration/test_ota_board.py) run
the same on MicroPython with power cuts and a crashing bundle.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import AuditEntry, Customer, Role, Terminal, TerminalCommand, User
from cloud.models.ota import OtaTarget
from cloud.services import ota
from cloud.services.scope import Viewer
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker
from tests.support.ota import OTHER, PUBLIC, make_bundle, seed_fleet
from tests.support.virtual_terminal import TerminalProcess, password, site_for

pytestmark = pytest.mark.integration

TIDS = ("OT1", "OT2", "OT3")
WAIT_S = 40.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [account_from_row(t, password(t), "terminal") for t in TIDS]
    accounts.append(account_from_row("ingest", S.INGEST_PASSWORD, "ingest"))
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


def test_rollout_in_waves_pauses_on_a_failure_and_confirms_the_rest(
    broker: MosquittoBroker, tmp_path: Path, tmp_path_factory: Any
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    now = datetime.now(UTC)
    with sessions() as s:
        customer, operator, bundle = seed_fleet(s, "Update Denki", TIDS, tmp_path / "b", now)
        rollout = ota.start_rollout(
            s,
            operator,
            bundle_pk=bundle.id,
            customer_id=customer.id,
            waves="1,2,100%",
            threshold_pct=20,
            confirm_s=30,
            now=now,
            ip=None,
        )
        rollout_id, bundle_size = rollout.id, bundle.size

    def targets() -> dict[str, OtaTarget]:
        with sessions() as s:
            rows = s.scalars(sa.select(OtaTarget).where(OtaTarget.rollout_id == rollout_id))
            return {t.terminal_id: t for t in rows}

    def rollout_state() -> str:
        with sessions() as s:
            return ota.rollout_detail(s, operator, rollout_id)[0].state

    worker = S.IngestProcess(
        broker,
        tmp_path,
        "ingest-ota",
        "ota",
        {"MIMAMORI_DATABASE_URL": url},
        extra=["--ota-advance", "0.3"],
    ).start()
    terminals = []
    try:
        for tid in TIDS:
            vt = TerminalProcess(
                tmp_path / tid, site_for(tid, broker.ports["terminal"], wiring=[]), None, ("--ota",)
            )
            trusted = OTHER.verify_key.encode().hex() if tid == "OT2" else PUBLIC
            vt.state_dir.mkdir(parents=True, exist_ok=True)
            (vt.state_dir / "ota_keys.json").write_text(json.dumps({"keys": [trusted]}))
            vt.start()
            terminals.append(vt)
        S.wait_for(
            lambda: targets()["OT1"].state == "confirmed", WAIT_S, "OT1 to confirm the update"
        )
        S.wait_for(lambda: rollout_state() == "paused", WAIT_S, "the pause after OT2 failed")
        got = targets()
        assert (got["OT2"].state, got["OT2"].reason) == (
            "failed",
            "signed by an untrusted key %s..." % PUBLIC[:16],
        )
        assert got["OT3"].state == "pending" and got["OT3"].offered_at is None
        assert got["OT1"].done == got["OT1"].total == bundle_size
        ot1 = terminals[0].state_dir
        boot = json.loads((ot1 / "ota" / "boot.json").read_text())
        assert (boot["slot"], boot["try"]) == ("a", None)
        assert (ot1 / "ota" / "a" / "edge" / "agent.mpy").is_file()
        assert not (ot1 / "ota" / "job.json").exists()
        terminals[0].wait_log("ota: job %d confirmed" % got["OT1"].id)
        with sessions() as s:
            ota.set_state(s, operator, rollout_id, "resume", now=datetime.now(UTC), ip=None)
        S.wait_for(lambda: targets()["OT3"].state == "confirmed", WAIT_S, "OT3 to confirm")
        S.wait_for(lambda: rollout_state() == "done", WAIT_S, "the rollout to finish")
    finally:
        for vt in terminals:
            vt.stop()
        worker.stop()
    with sessions() as s:
        offers = s.scalars(
            sa.select(TerminalCommand.terminal_id).where(TerminalCommand.name == "ota")
        ).all()
        assert sorted(offers) == ["OT1", "OT2", "OT3"]
        actions = s.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action.like("ota.%"))
        ).all()
        assert actions == [
            "ota.bundle.upload",
            "ota.rollout.start",
            "ota.rollout.pause",
            "ota.rollout.resume",
        ]
    engine.dispose()


def test_a_terminal_that_missed_the_cancel_is_told_at_its_next_chunk_request(
    broker: MosquittoBroker, tmp_path: Path, tmp_path_factory: Any
) -> None:
    """The terminal was offline when the operator cancelled (its download on
    flash, as a power cut leaves it): its first chunk request after coming
    back is answered by the ingest with ``ota_cancel``, and it stops."""
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    now = datetime.now(UTC)
    tid = TIDS[0]
    with sessions() as s:
        customer = Customer(name="Cancel Denki", timezone="Asia/Tokyo")
        s.add(customer)
        s.flush()
        s.add(Terminal(id=tid, customer_id=customer.id, contract_start=date(2025, 1, 1)))
        user = User(email="op@example.com", password_hash="-", role=Role.OPERATOR)
        s.add(user)
        s.commit()
        operator = Viewer(user.id, user.email, Role.OPERATOR, None)
        bundle = ota.upload_bundle(
            s, operator, make_bundle(tmp_path / "b"), trusted_keys=[PUBLIC], now=now, ip=None
        )
        rollout = ota.start_rollout(
            s, operator, bundle_pk=bundle.id, terminal_ids=[tid], waves="100%", now=now, ip=None
        )
        job = s.scalars(sa.select(OtaTarget.id).where(OtaTarget.rollout_id == rollout.id)).one()
        s.get(OtaTarget, job).state = "downloading"  # it accepted and began, then went away
        s.commit()
        ota.set_state(s, operator, rollout.id, "cancel", now=now, ip=None)  # no broker heard it
        bundle_id, size = bundle.bundle_id, bundle.size
    vt = TerminalProcess(
        tmp_path / tid, site_for(tid, broker.ports["terminal"], wiring=[]), None, ("--ota",)
    )
    ota_dir = vt.state_dir / "ota"
    (ota_dir / "a").mkdir(parents=True)
    (vt.state_dir / "ota_keys.json").write_text(json.dumps({"keys": [PUBLIC]}))
    (ota_dir / "a" / "manifest.sig").write_bytes(b'{"alg": "ed')  # a chunk of it staged
    job_file = {
        "job": job,
        "bundle": bundle_id,
        "version": "2.0.0",
        "size": size,
        "confirm_s": 60,
        "slot": "a",
        "from": "",
        "state": "download",
    }
    (ota_dir / "job.json").write_text(json.dumps(job_file))

    def target() -> OtaTarget:
        with sessions() as s:
            t = s.get(OtaTarget, job)
            assert t is not None
            return t

    worker = S.IngestProcess(
        broker, tmp_path, "ingest-cancel", "cancel", {"MIMAMORI_DATABASE_URL": url}
    ).start()
    try:
        with vt:
            vt.wait_log("ota: job %d failed: cancelled by the cloud" % job, WAIT_S)
            S.wait_for(
                lambda: target().reason == "cancelled by the cloud", WAIT_S, "the terminal's report"
            )
        assert not (ota_dir / "job.json").exists() and not (ota_dir / "a").exists()
    finally:
        worker.stop()
    with sessions() as s:
        cancel = s.scalars(
            sa.select(TerminalCommand).where(TerminalCommand.name == "ota_cancel")
        ).one()
        assert (cancel.terminal_id, cancel.args, cancel.requested_by) == (
            tid,
            {"job": job},
            "system",
        )
        assert (cancel.state, cancel.result) == ("succeeded", "job %d cancelled" % job)
        assert target().state == "failed"
    engine.dispose()
