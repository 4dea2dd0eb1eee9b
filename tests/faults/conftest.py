"""Fixtures of the fault tier: a seeded SQLite database, a broker, a fleet.

Every fault test starts its own services on free loopback ports and stops
them; ``MIMAMORI_PROFILE=long`` (``make soak``) scales fleets and faults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import db
from tests.support import faults as F
from tests.support import ingest as S
from tests.support.broker import MosquittoBroker


def seed_database(url: str, n: int) -> None:
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as s:
            S.seed(s, F.tids(n))
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file seeded with the fleet's terminals (the largest fleet)."""
    url = S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp())
    seed_database(url, F.profile(20, 100))
    return url


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = F.start_broker(tmp_path / "mqtt", F.tids(F.profile(20, 100)))
    try:
        yield b
    finally:
        b.stop()
