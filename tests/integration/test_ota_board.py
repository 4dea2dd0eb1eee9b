"""Over-the-air updates on the virtual board: the board build under real
MicroPython (firmware_sim.vboard), flashed with ``mimamori-install flash``,
updated by the cloud (the project's Mosquitto, the ingest serving chunks and
driving the rollout) with bundles built and signed by ``mimamori-install``.

One board, wired to a simulated insulation monitor and sending every
sample at once (one data frame a second), goes through, in order: an
update that confirms; a bundle that crashes at import, rolled back within
its deadline; an update whose power is cut at ten points (flash writes of
the download, of the switch and of the confirmation), each time powered on
again, ending confirmed. No frame is lost: every frame that was on the
board's flash outbox at a cut (read from a copy of the flash while the
board is off, each by its terminal, boot and sequence number), and every
one left at the end, is stored by the cloud exactly once (its receipt, its
samples in the store, counted once by the ingest). The builds are shared
(one module fixture).
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
from cloud.models import Customer, FrameReceipt, IngestCounter, Role, Terminal, User
from cloud.models.ota import OtaTarget
from cloud.services import ota
from cloud.services.scope import Viewer
from cloud.timeseries import SqlStore
from edge.config import CLOUD_FILE
from edge.installer.signing import KEY_KIND
from edge.outbox import Outbox
from firmware_sim.vboard import VirtualBoard
from protocol import frames
from tests.support import ingest as S
from tests.support.broker import HOST, MosquittoBroker
from tests.support.faults.agents import cloud_for
from tests.support.ota import KEY, PUBLIC
from tests.support.sim import SimProcess
from tests.support.virtual_terminal import password, site_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TID = "OB1"
SSID, WLAN_KEY = "ota-bench", "ota-bench-key"  # the virtual access point's, not a secret
WAIT_S = 90.0
CONFIRM_S = 20
WIRING = [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
Key = tuple[str, int, int]  # (terminal, boot, seq): the cloud's dedup key


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


def board_site(port: int) -> dict[str, Any]:
    """Sampling the insulation monitor once a second (the cloud part on flash
    sends every sample at once: a frame a second to lose, if anything loses them)."""
    site = site_for(
        TID,
        port,
        wiring=WIRING,
        clock={"ntp": ""},
        sample={"interval": 1, "unreachable_after": 3},
    )
    site["broker"]["host"] = "localhost"
    return site


def flash_board(board: VirtualBoard, bundle: Path, tmp: Path, port: int) -> None:
    site = board_site(port)
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


def outbox_copy(board: VirtualBoard, tmp: Path) -> Outbox:
    """The board's outbox opened on a copy of its flash, the board being off
    (opening an outbox may repair it: the board's own flash stays untouched)."""
    copy = tmp / "outbox-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(board.flash_dir / "outbox", copy)
    return Outbox(str(copy))


def on_flash(board: VirtualBoard, tmp: Path) -> dict[Key, bytes]:
    """The frames waiting in the board's outbox, by key."""
    out = {}
    for _rid, _kind, payload in outbox_copy(board, tmp).peek(1 << 30):
        _type, tid, boot, seq = frames.head(payload)
        out[(tid, boot, seq)] = bytes(payload)
    return out


def receipts(cloud: Cloud) -> set[Key]:
    t = FrameReceipt.__table__
    with cloud.engine.connect() as conn:
        return {
            (r[0], int(r[1]), int(r[2]))
            for r in conn.execute(sa.select(t.c.terminal_id, t.c.boot, t.c.seq))
        }


def stored_once(cloud: Cloud, kept: dict[Key, bytes]) -> None:
    """Every frame of ``kept`` has its receipt, its samples are in the store,
    and the ingest applied no frame twice (a redelivery counts as a duplicate)."""
    got = receipts(cloud)
    with cloud.engine.connect() as conn:
        applied = conn.scalar(sa.select(sa.func.sum(IngestCounter.__table__.c.frames)))
    missing = sorted(set(kept) - got)
    assert not missing, f"{len(missing)} of {len(kept)} frames lost: {missing[:20]}"
    assert int(applied or 0) == len(got), (applied, len(got))
    times = {
        ts
        for payload in kept.values()
        if (frame := frames.decode(payload))["type"] == "data"
        for ts in frames.sample_times(frame)
    }
    points = {
        p.key[2]
        for p in SqlStore(cloud.engine).iter_points()
        if p.key[0] == TID and not p.channel.startswith("$")
    }
    assert times, "no data frame was on the flash at any cut"
    assert not times - points, sorted(times - points)[:20]


def test_update_crash_rollback_and_power_cuts_on_the_virtual_board(
    broker: MosquittoBroker,
    insulation_sim: SimProcess,
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
    flash = tmp_path / "flash"
    flash.mkdir()
    site = board_site(broker.ports["terminal"])
    (flash / CLOUD_FILE).write_text(json.dumps(cloud_for(site, [])))
    board = VirtualBoard(
        flash,
        uarts={2: insulation_sim.endpoints["pty"]},
        wlan=[f"{SSID}:{WLAN_KEY}"],
        dns={"localhost": HOST},
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
        kept: dict[Key, bytes] = {}  # every frame on the flash at a cut
        for n, suffix in cuts:
            board.power_cut(at_write=n, suffix=suffix)
            try:
                board.wait_dead(WAIT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"no power cut at write {n} of *{suffix}:\n{board.console()[-3000:]}"
                ) from None
            kept.update(on_flash(board, tmp_path))
            board.restart()
        final = cloud.wait(job, ota.FINAL, "the update after the power cuts", board)
        assert final.state == "confirmed", (final.state, final.reason)
        S.wait_for(lambda: cloud.firmware().startswith("4-"), WAIT_S, "a birth of version 4")
        # nothing lost: what was on the flash at the cuts is stored, once
        try:
            S.wait_for(lambda: set(kept) <= receipts(cloud), WAIT_S, "the frames of the cuts")
        except AssertionError:
            pass  # stored_once names the missing ones
        stored_once(cloud, kept)
        data = sum(1 for k in kept.values() if frames.decode(k)["type"] == "data")
        print(f"{len(kept)} frames ({data} data) were on the flash at the cuts; each stored once")
        board.stop()
        assert outbox_copy(board, tmp_path).dropped == 0
    finally:
        board.stop()
        board.close()
        worker.stop()
        cloud.engine.dispose()
