"""Disk full on the cloud side: the SQLite database on a small tmpfs that a
filler file has filled up.

While the disk is full every batch fails (SQLITE_FULL): the worker must
store nothing and acknowledge nothing (so the broker keeps the frames, and
the terminals, the real agent, keep them in their outboxes); once the
filler file is deleted, everything is stored exactly once.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import seed_database
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

N = F.profile(20, 100)
FULL_S = F.profile(5.0, 60.0)
# Room for everything the run stores once the filler is gone (about 400 bytes
# per frame with its samples): the long run's ~65,000 frames fill 16 MB
# before the backlog is stored, and the disk would be full a second time.
DISK_BYTES = F.profile(16, 64) * 1024 * 1024


def mount_tmpfs(path: Path, size_bytes: int) -> None:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"mount -t tmpfs needs root (CAP_SYS_ADMIN): {done.stderr}")


def fill(path: Path) -> Path:
    """Write a filler file until the file system refuses (ENOSPC)."""
    filler = path / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(chunk)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    mount_tmpfs(disk, DISK_BYTES)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_disk_full_acknowledges_nothing_and_resumes(
    broker: MosquittoBroker,
    small_disk: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    src = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    shutil.copy(src.removeprefix("sqlite:///"), small_disk / "ingest.sqlite3")
    url = f"sqlite:///{small_disk / 'ingest.sqlite3'}"
    seed_database(url, N)
    worker = F.IngestProcess(broker, tmp_path, url).start()
    eng = F.engine(url)
    fleet = F.AgentFleet(broker.ports["terminal"], N, tmp_path / "terminals")
    try:
        # Open our reading connection while there is room: a WAL database's
        # first connection creates its -shm file, which a full disk refuses
        # (the web site holds its pooled connections the same way).
        assert F.receipt_count(eng) == 0
        filler = fill(small_disk)
        fleet.start()
        fleet.wait_connected()
        S.wait_for(
            lambda: worker.alive() and (worker.stats() or {}).get("batch_failures", 0) >= 1,
            60,
            "a batch to fail on the full disk",
        )
        time.sleep(FULL_S)  # the outage's duration, not synchronisation
        stored_while_full = F.receipt_count(eng)
        failures = (worker.stats() or {}).get("batch_failures", 0)
        received = (worker.stats() or {}).get("received", 0)
        filler.unlink()
        freed = time.monotonic()
        S.wait_for(lambda: F.receipt_count(eng) > 0, 60, "storing to resume")
        recovery = time.monotonic() - freed
        time.sleep(2.0)  # some live stream after the outage
        settle_s = F.settle(eng, fleet.generated(), 120)
        fleet.stop()
        worker.stop()
    finally:
        fleet.stop()
        eng.dispose()
    figures = F.account(url, fleet)
    figures.update(
        terminals=N,
        full_s=FULL_S,
        disk_mb=DISK_BYTES // 2**20,
        stored_while_full=stored_while_full,
        batch_failures_while_full=failures,
        received_while_full=received,
        recovery_s=round(recovery, 3),
        settle_s=round(settle_s, 2),
        batch_failures=worker.total("batch_failures"),
        duplicates_dropped=worker.total("duplicates"),
        **fleet.resend_figures(),
    )
    F.Report("disk_full", **figures).write()
    assert stored_while_full == 0, figures
    assert failures >= 1 and received > 0, figures
    assert figures["missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["wrong_values"] == 0, figures
    assert figures["stored_once"] >= N * FULL_S, figures
