"""A private InfluxDB 1.x server for tests and benchmarks, and its fixtures.

:class:`InfluxServer` writes a config with every listener on a free loopback
port and meta/data/wal directories in a temp dir, reporting and the
``_internal`` monitor store off, then runs ``influxd`` (Debian package
``influxdb``) and waits for ``/ping``. A missing ``influxd`` is an error
naming the package, never a skip.

Fixture (registered in ``tests/conftest.py``, so a test just names it):
``influx_store`` is an :class:`InfluxStore` on a fresh database of the
session's server, which starts on first use and stops at session end.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cloud.demo.procs import free_port
from cloud.timeseries.influx import InfluxStore
from cloud.timeseries.influx_wire import InfluxClient

START_TIMEOUT_S = 60

CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{tmp}/meta"
  logging-enabled = false

[data]
  dir = "{tmp}/data"
  wal-dir = "{tmp}/wal"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  auth-enabled = {auth}
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  # The backend maintains its rollups itself (SELECT ... INTO on write).
  enabled = false

[subscriber]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


ADMIN = ("admin", "influx-admin-secret")


class InfluxServer:
    """A throwaway ``influxd``. Use as a context manager or start()/stop().

    With ``auth``, the server requires accounts, as a production one does;
    :data:`ADMIN` is then its admin (created while no user existed yet,
    which InfluxDB 1.x allows once).
    """

    def __init__(self, auth: bool = False) -> None:
        self.auth = auth
        binary = shutil.which("influxd")
        if binary is None:
            raise RuntimeError(
                "influxd not found: install the Debian package 'influxdb' (make system-deps)"
            )
        self.binary = binary
        self.tmp: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._databases = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InfluxServer:
        self.tmp = Path(tempfile.mkdtemp(prefix="mimamori-influx-"))
        for _attempt in range(5):
            self.port = free_port()
            config = self.tmp / "influxdb.conf"
            config.write_text(
                CONFIG.format(
                    tmp=self.tmp,
                    rpc_port=free_port(),
                    http_port=self.port,
                    auth="true" if self.auth else "false",
                )
            )
            log = open(self.tmp / "influxd.log", "ab")  # the child gets its own copy
            self.proc = subprocess.Popen(
                [self.binary, "run", "-config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_ready():
                if self.auth:
                    self._create_admin()
                return self
            self._kill()
        tail = (self.tmp / "influxd.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"influxd did not start:\n{tail}")

    def _wait_ready(self) -> bool:
        client = InfluxClient(self.url, timeout=1.0)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    return False  # exited: port taken, bad config, ...
                if client.ping():
                    return True
                time.sleep(0.05)
            return False
        finally:
            client.close()

    def _create_admin(self) -> None:
        client = InfluxClient(self.url)
        try:
            name, password = ADMIN
            client.query("", [f"CREATE USER {name} WITH PASSWORD '{password}' WITH ALL PRIVILEGES"])
        finally:
            client.close()

    def store(self, prefix: str = "test") -> InfluxStore:
        """An :class:`InfluxStore` on a new, prepared database."""
        self._databases += 1
        store = InfluxStore(InfluxClient(self.url), f"{prefix}_{self._databases}")
        store.create_database()
        store.prepare()
        return store

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> InfluxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_SERVER_KEY = pytest.StashKey[InfluxServer]()


def session_server(config: pytest.Config) -> InfluxServer:
    """The session's server, started on first use, stopped at session end."""
    server = config.stash.get(_SERVER_KEY, None)
    if server is None:
        server = InfluxServer().start()
        config.stash[_SERVER_KEY] = server
        config.add_cleanup(server.stop)
    return server


@pytest.fixture
def influx_store(request: pytest.FixtureRequest) -> InfluxStore:
    """An :class:`InfluxStore` on a fresh database of the session's server."""
    store = session_server(request.config).store()
    request.addfinalizer(store.client.close)
    return store
