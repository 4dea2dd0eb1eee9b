"""The ingest writer process (cloud.ingest.writer): same results as in-process,
a dead writer is "storage unavailable" and comes back, and a writer whose
receiver died exits instead of committing on."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.config import Settings
from cloud.errors import CloudError, DatabaseError
from cloud.ingest.service import Inbound
from cloud.ingest.writer import RemoteService, service_from_settings
from cloud.models import FrameReceipt
from tests.support import ingest as S

TIDS = ["W0001", "W0002"]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = S.migrated_sqlite(tmp_path, tmp_path)
    engine = db.make_engine(url)
    with db.session_factory(engine)() as session:
        S.seed(session, TIDS)
    engine.dispose()
    return url


@pytest.fixture
def remote(url: str) -> Iterator[RemoteService]:
    service = RemoteService(
        functools.partial(service_from_settings, Settings(database_url=url), None, True, False)
    )
    yield service
    service.close()


def receipts(url: str) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        n = conn.scalar(sa.select(sa.func.count()).select_from(FrameReceipt))
    engine.dispose()
    return int(n or 0)


def stream(n: int) -> list[Inbound]:
    terminals = [S.Terminal(t, boot=1) for t in TIDS]
    frames = [t.birth() for t in terminals]
    frames += [t.data() for _ in range(n) for t in terminals]
    return [Inbound.of_frame(f, S.at(S.T0 + 60)) for f in frames]


def test_a_batch_is_stored_by_the_writer_and_answered_per_message(
    remote: RemoteService, url: str
) -> None:
    batch = stream(5)
    garbage = Inbound("mm/v1/W0001/up/data", b"\xff\x00", S.at(S.T0 + 60))
    result = remote.process([*batch, garbage])
    assert [o.status for o in result.outcomes] == ["stored"] * len(batch) + ["rejected"]
    assert result.rejects[0].reason == "unsupported_cbor"
    assert result.outcomes[2].key == ("W0001", 1, 1)  # keys survive the pipe
    assert receipts(url) == len(batch)
    again = remote.process(batch)  # a redelivery: receipts make it exact
    assert {o.status for o in again.outcomes} == {"duplicate"}
    assert receipts(url) == len(batch)


def test_a_killed_writer_is_storage_unavailable_and_restarts(
    remote: RemoteService, url: str
) -> None:
    batch = stream(3)
    remote.process(batch[:2])
    assert remote._proc is not None
    os.kill(remote._proc.pid, signal.SIGKILL)
    with pytest.raises(DatabaseError, match="writer process ended"):
        remote.process(batch[2:])
    result = remote.process(batch)  # the worker's retry: a new writer
    assert remote.starts == 2
    assert [o.status for o in result.outcomes] == ["duplicate"] * 2 + ["stored"] * (len(batch) - 2)
    assert receipts(url) == len(batch)


def test_a_writer_that_cannot_start_says_why() -> None:
    factory = functools.partial(service_from_settings, "not settings")
    with pytest.raises(CloudError, match=r"could not start.*database_url"):
        RemoteService(factory)  # type: ignore[arg-type]


def test_the_writer_exits_when_its_receiver_is_killed(url: str, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import functools, sys
        from cloud.config import Settings
        from cloud.ingest.writer import RemoteService, service_from_settings
        if __name__ == "__main__":
            r = RemoteService(functools.partial(
                service_from_settings, Settings(database_url={url!r}), None, True, False))
            print(r._proc.pid, flush=True)
            sys.stdin.read()  # until killed
    """)
    path = tmp_path / "receiver.py"
    path.write_text(script)
    receiver = subprocess.Popen(
        [sys.executable, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert receiver.stdout is not None
        writer_pid = int(receiver.stdout.readline())
        receiver.kill()
        receiver.wait()
        S.wait_for(lambda: not _alive(writer_pid), 30, "the orphaned writer to exit")
    finally:
        receiver.kill()


def _state(pid: int) -> str:
    """The process state letter (R, S, T, Z...), "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][0]
    except FileNotFoundError:
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z")


def test_submitted_batches_come_back_in_order_or_all_fail_with_the_writer(
    remote: RemoteService, url: str
) -> None:
    batch = stream(4)
    first, second = batch[:5], batch[5:]
    remote.submit(first)
    remote.submit(second)
    assert [o.status for o in remote.result().outcomes] == ["stored"] * len(first)
    assert [o.status for o in remote.result().outcomes] == ["stored"] * len(second)
    # Two batches in the pipe when the writer dies: both must be offered again.
    again = stream(6)[len(batch) :]
    assert remote._proc is not None
    pid = remote._proc.pid
    os.kill(pid, signal.SIGSTOP)  # it must not get to them before it dies
    S.wait_for(lambda: _state(pid) == "T", 10, "the writer to stop")
    remote.submit(again[:2])
    remote.submit(again[2:])
    os.kill(pid, signal.SIGKILL)
    for _ in range(2):
        with pytest.raises(DatabaseError):
            remote.result()
    result = remote.process(again)  # the worker's fallback: one by one, new writer
    assert {o.status for o in result.outcomes} <= {"stored", "duplicate"}
    assert receipts(url) == len(batch) + len(again)
