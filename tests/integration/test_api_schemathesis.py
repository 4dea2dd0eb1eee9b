"""Property-based check of the REST API against its own OpenAPI document.

Schemathesis reads ``/api/v1/openapi.json`` from the app served on a free
loopback port (real HTTP, threaded WSGI server) and calls every operation
with generated requests (valid and invalid) as the operator, who may see
every customer, on SQLite and on PostgreSQL. Every response must pass
schemathesis' default checks (no server error; documented status code,
content type, headers; body matching the documented schema; schema-breaking
requests refused with a 4xx) except "valid data accepted" (see EXCLUDED).
Bounded: 25 examples per operation and generation mode.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from cloud import db
from cloud.timeseries import SqlStore
from tests.support.api import bearer, issue_tokens
from tests.support.postgres import session_server
from tests.support.web import LiveServer, World, build_world, make_app, migrated_copy

pytestmark = pytest.mark.integration


EXAMPLES = 25
# "Schema-valid request rejected" cannot hold for rules a schema cannot
# express: opaque cursors this API never issued, start >= end, warn above
# alarm, an id that is registered already. Those answer 400/422 by design.
EXCLUDED = [checks.positive_data_acceptance]
# Valid requests, and requests that break the schema (must be refused with a 4xx).
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.fixture(params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, web_template: Any, tmp_path: Path, clock: Any
) -> Iterator[tuple[str, dict[str, str]]]:
    """The app on a real HTTP server, on a copy of the SQLite world or on a
    fresh PostgreSQL database (32-bit ids, strict types: different failures)."""
    if request.param == "sqlite":
        url = migrated_copy(web_template[0], tmp_path)
        engine = db.make_engine(url)
        world = World(url, engine, SqlStore(engine), dict(web_template[1]))
    else:
        url = session_server(request.config).create_database("api")
        db.upgrade(url)
        world = build_world(url)
    try:
        with LiveServer(make_app(world, clock)) as server:
            yield server.url, issue_tokens(world)
    finally:
        world.engine.dispose()


def test_api_conforms_to_its_openapi_document(live: tuple[str, dict[str, str]]) -> None:
    url, tokens = live
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json")
    headers = bearer(tokens["operator"])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17  # every documented operation, none failed to load
    failures: dict[str, str] = {}
    calls = 0
    for operation, mode in itertools.product(operations, MODES):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=headers, timeout=30, excluded_checks=EXCLUDED)

        try:
            run()
        except (Exception, BaseExceptionGroup) as err:
            failures[f"{operation.label} ({mode})"] = _describe(err)[:3000]
    assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())
    assert calls >= len(operations) * len(MODES) * 5  # the generator really ran


def _describe(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "\n".join(_describe(e) for e in err.exceptions)
    return f"{type(err).__name__}: {err}"
