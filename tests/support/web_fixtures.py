"""pytest fixtures of the web tests (registered in ``tests/conftest.py``):
``web_template`` (a migrated database with the world built once per
session), ``world`` (a private copy of it), ``clock``, ``app`` and ``client``. Helpers live in
:mod:`tests.support.web`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cloud import db
from cloud.timeseries import SqlStore
from tests.support.web import (
    Clock,
    World,
    build_world,
    make_app,
    migrate_template,
    migrated_copy,
)


@pytest.fixture(scope="session")
def web_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A migrated database with the world built in, and the world's ids
    (built once per session; each test gets a copy of the file)."""
    directory = tmp_path_factory.mktemp("web-world")
    path = migrate_template(directory)
    built = build_world(f"sqlite:///{path}")
    built.engine.dispose()
    return path, built.ids


@pytest.fixture
def world(web_template: tuple[Path, dict[str, Any]], tmp_path: Path) -> Iterator[World]:
    path, ids = web_template
    url = migrated_copy(path, tmp_path)
    engine = db.make_engine(url)
    w = World(url, engine, SqlStore(engine), dict(ids))
    yield w
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(world: World, clock: Clock) -> Flask:
    return make_app(world, clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client whose browser prefers English (before login; users have a language)."""
    c = app.test_client()
    c.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return c
