"""The IngestService unit tests again, on PostgreSQL (a private server started
by tests/support/postgres.py). SQLite runs them in tests/unit."""

from __future__ import annotations

import pytest

from cloud import db
from tests.unit.test_ingest_service import *  # noqa: F403

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql"])
def db_url(pg_url: str) -> str:
    db.upgrade(pg_url)
    return pg_url
