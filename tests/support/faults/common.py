"""Settings and helpers every fault test shares: the profile, terminal ids, the broker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cloud.broker import account_from_row
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker

ROOT = Path(__file__).resolve().parents[3]
LONG = os.environ.get("MIMAMORI_PROFILE", "short") == "long"
INGEST_PASSWORD = S.INGEST_PASSWORD
WEB_PASSWORD = "pw-web"  # the web's service account: it sends commands to terminals
START_S = 30.0
Key = tuple[str, int, int]  # (terminal, boot, seq): the dedup key


def profile(short: Any, long: Any) -> Any:
    """The short-profile value, or the long one under ``MIMAMORI_PROFILE=long``."""
    return long if LONG else short


def tids(n: int) -> list[str]:
    return [f"F{i:03d}" for i in range(n)]


def accounts(terminal_ids: Iterable[str]) -> list[Any]:
    return [
        account_from_row("ingest", INGEST_PASSWORD, "ingest"),
        account_from_row("web", WEB_PASSWORD, "web"),
        *(account_from_row(t, S.PASSWORD.format(tid=t), "terminal") for t in terminal_ids),
    ]


def start_broker(workdir: Path, terminal_ids: Iterable[str]) -> MosquittoBroker:
    """Own Mosquitto with unlimited session queues (the shipped production
    setting is a million; what is under test here is loss, not that cap)."""
    broker = MosquittoBroker(
        workdir, accounts(terminal_ids), max_queued_messages=0, max_queued_bytes=0
    )
    broker.start()
    return broker


def kill_broker(broker: MosquittoBroker) -> None:
    """SIGKILL mosquitto: no store is written, sockets drop without DISCONNECT."""
    proc = broker._proc  # the support class keeps it private; a kill is test-only
    assert proc is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    broker._proc = None
