"""The whole chain on one host, for end-to-end tests: broker accounts, a seeded
database and the ingest worker as a process.

- :data:`ACCOUNTS` holds the broker accounts of one virtual terminal
  (:data:`TID`) and of the ingest and web service roles;
- :func:`seed_site` registers a customer with a customer-admin user and the
  contracted terminal in a migrated database;
- :class:`IngestProcess` runs ``python -m cloud.ingest`` against the test
  broker's service listener and that database, and waits (with a deadline)
  until it has subscribed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloud.broker import account_from_row
from cloud.models import Customer, Role, Terminal, User
from cloud.services.passwords import Passwords
from tests.support.broker import HOST, MosquittoBroker
from tests.support.ingest import wait_for
from tests.support.virtual_terminal import password
from tests.support.web import EMAILS, PASSWORD, World

TID = "VE1"
INGEST_PASSWORD = "pw-ingest"  # throw-away account of a test broker
WEB_PASSWORD = "pw-web"
ACCOUNTS = [
    account_from_row(TID, password(TID), "terminal"),
    account_from_row("ingest", INGEST_PASSWORD, "ingest"),
    account_from_row("web", WEB_PASSWORD, "web"),
]
ADMIN_EMAIL = EMAILS["admin_a"]


def seed_site(world: World, tid: str = TID) -> dict[str, Any]:
    """A customer (English), its customer admin (``ADMIN_EMAIL``/``PASSWORD``)
    and terminal ``tid`` under contract since yesterday; returns their ids."""
    pw = Passwords(1, 8192, 1, 10).hash(PASSWORD)
    with world.session() as s:
        customer = Customer(name="E2E Denki", timezone="Asia/Tokyo", language="en")
        s.add(customer)
        s.flush()
        admin = User(
            email=ADMIN_EMAIL,
            password_hash=pw,
            role=Role.CUSTOMER_ADMIN,
            customer_id=customer.id,
            language="en",
        )
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
        s.add_all(
            [
                admin,
                Terminal(
                    id=tid,
                    customer_id=customer.id,
                    name="E2E substation",
                    contract_start=yesterday,
                    registered_on=yesterday,
                ),
            ]
        )
        s.commit()
        return {"customer": customer.id, "admin": admin.id}


class IngestProcess:
    """``python -m cloud.ingest`` on the broker's service listener; stopped on exit.

    Settings come only from the environment (``MIMAMORI_DATABASE_URL``): it
    runs in ``workdir``, where there is no ``instance/mimamori.toml``. Its
    output goes to ``workdir/ingest.log``, which failures quote.
    """

    def __init__(
        self, broker: MosquittoBroker, db_url: str, workdir: Path, start_timeout: float = 30.0
    ) -> None:
        self.broker, self.db_url, self.workdir = broker, db_url, workdir
        self.start_timeout = start_timeout
        self.stats_file = workdir / "stats.json"
        self.log_path = workdir / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> IngestProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MIMAMORI_DATABASE_URL": self.db_url,
            "MIMAMORI_INGEST_MQTT_PASSWORD": INGEST_PASSWORD,
        }
        cmd = [
            sys.executable,
            "-m",
            "cloud.ingest",
            "--host",
            HOST,
            "--port",
            str(self.broker.ports["service"]),
            "--username",
            "ingest",
            "--client-id",
            f"ingest-e2e-{os.getpid()}",
            "--stats-file",
            str(self.stats_file),
            "--stats-interval",
            "0.1",
            "--batch-ms",
            "20",
            "--no-forwarding",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for(
                lambda: self._alive() and self._stats().get("subscribed"),
                self.start_timeout,
                f"the ingest worker to subscribe; log:\n{self.log()}",
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """SIGTERM (finish the batch, disconnect cleanly), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"ingest exited {self.proc.returncode}:\n{self.log()}")
        return True

    def _stats(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""
