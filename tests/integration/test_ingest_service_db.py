"""The IngestService unit tests again, on PostgreSQL (a private server started
by tests/support/postgres.py). SQLite runs them in tests/unit."""

from __future__ import annotations

import pytest

from tests.support.head import upgrade_to_head
from tests.unit.test_ingest_service import *  # noqa: F403

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql"])
def db_url(pg_url: str) -> str:
    upgrade_to_head(pg_url)
    return pg_url
