"""Session-wide test settings shared by every tier, and the shared fixtures.

Fixture modules are registered here, once, for every test below: a test
names a fixture as a parameter and never imports it.

- ``tests.support.postgres``: ``db_url`` (a fresh database, SQLite and
  PostgreSQL), ``pg_url`` (PostgreSQL only);
- ``tests.support.influx``: ``influx_store`` (a fresh InfluxDB database);
- ``tests.support.ops``: ``migrated`` (``db_url`` upgraded to head) and
  ``engine`` on it;
- ``tests.support.web_fixtures``: ``web_template``, ``world``, ``clock``,
  ``app`` and ``client`` of the web tests;
- ``tests.support.board_fixtures``: ``board_bundle`` (the board build, once
  per session, shared with hil_tests) and ``sntp``.

Fixtures used by one directory only live in that directory's conftest.py.
"""

from __future__ import annotations

from tests.support import micropython

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.influx",
    "tests.support.ops",
    "tests.support.web_fixtures",
    "tests.support.board_fixtures",
]


def pytest_report_header(config):
    # Shows at the top of every run which real MicroPython the mpy tier used.
    try:
        return [f"micropython: {micropython.version()}"]
    except Exception as err:  # the tier's own tests fail with the details
        return [f"micropython: unavailable ({err})"]
