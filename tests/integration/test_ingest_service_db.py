"""The IngestService unit tests again, on PostgreSQL (a private server started
by tests/support/postgres.py). SQLite runs them in tests/unit."""

from __future__ import annotations

import pytest

from cloud import db
from tests.support.postgres import pg_url  # noqa: F401
from tests.unit.test_ingest_service import *  # noqa: F403

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql"])
def db_url(pg_url: str) -> str:  # noqa: F811
    db.upgrade(pg_url)
    return pg_url
