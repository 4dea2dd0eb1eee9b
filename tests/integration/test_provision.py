"""``mimamori-install provision`` against the real web app served on a free
loopback port: registers the terminal through the REST API, and writes the
credentials into a site file the terminal's own validator accepts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.broker import Account
from cloud.broker.accounts import Role as BrokerRole
from cloud.models import Terminal
from cloud.services.credentials import check_mqtt_password
from edge import config as edge_config
from tests.support.api import issue_tokens
from tests.support.broker import MosquittoBroker
from tests.support.web import LiveServer, make_app

pytestmark = pytest.mark.integration


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def served(world: Any, clock: Any) -> Iterator[tuple[str, dict[str, str]]]:
    app = make_app(
        world,
        clock,
        broker_public_host="mqtt.acme.test",
        broker_public_port=8883,
        broker_public_tls=True,
    )
    with LiveServer(app) as server:
        yield server.url + "/api/v1", issue_tokens(world)


def install(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MIMAMORI_API_TOKEN", None)
    if token is not None:
        env["MIMAMORI_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "edge.installer", "provision", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_provision_registers_and_writes_a_valid_site_file(
    served: Any, world: Any, tmp_path: Path
) -> None:
    api, tokens = served
    out = tmp_path / "site.json"
    r = install(
        "--api",
        api,
        "--token",
        tokens["installer"],
        "--terminal-id",
        "TN7",
        "--customer",
        str(world.ids["customer_a"]),
        "--name",
        "B1 room",
        "--site-out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    site = json.loads(out.read_text())
    normalized = edge_config.validate_site(site)  # what the terminal checks at boot
    assert normalized["terminal_id"] == "TN7"
    assert normalized["broker"] == {"host": "mqtt.acme.test", "port": 8883, "tls": True}
    password = site["credentials"]["password"]
    assert password and password not in r.stdout + r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with world.session() as s:
        terminal = s.get(Terminal, "TN7")
        assert terminal is not None
        assert terminal.customer_id == world.ids["customer_a"] and terminal.name == "B1 room"
        assert check_mqtt_password(terminal, password)


def test_existing_wiring_is_kept_and_rotate_replaces_password(
    served: Any, world: Any, tmp_path: Path
) -> None:
    api, tokens = served
    out = tmp_path / "site.json"
    out.write_text(
        json.dumps(
            {
                "terminal_id": "old",
                "broker": {"host": "x"},
                "credentials": {"password": "old"},
                "wiring": [{"unit": 1, "profile": "IM-100", "name": "leak1"}],
                "sample": {"interval": 30},
            }
        )
    )
    args = (
        "--api",
        api,
        "--terminal-id",
        "TA1",
        "--customer",
        str(world.ids["customer_a"]),
        "--site-out",
        str(out),
    )
    first = install(*args, token=tokens["installer"])  # token from the environment
    assert first.returncode == 0, first.stderr
    site = json.loads(out.read_text())
    assert site["wiring"] == [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
    assert site["sample"] == {"interval": 30} and site["terminal_id"] == "TA1"
    edge_config.validate_site(site)
    # Credentials exist now: a second run refuses and leaves the file alone.
    again = install(*args, token=tokens["installer"])
    assert again.returncode == 1 and "rotate" in again.stderr
    assert json.loads(out.read_text()) == site
    rotated = install(*args, "--rotate", token=tokens["installer"])
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(out.read_text())["credentials"]["password"]
    assert new != site["credentials"]["password"]
    with world.session() as s:
        terminal = s.get(Terminal, "TA1")
        assert terminal is not None and check_mqtt_password(terminal, new)
        assert not check_mqtt_password(terminal, site["credentials"]["password"])


def test_refusals_are_one_line_errors(served: Any, world: Any, tmp_path: Path) -> None:
    api, tokens = served
    out = tmp_path / "site.json"
    wrong_customer = install(
        "--api",
        api,
        "--token",
        tokens["installer"],
        "--terminal-id",
        "TB1",
        "--customer",
        str(world.ids["customer_a"]),
        "--site-out",
        str(out),
    )
    assert wrong_customer.returncode == 1
    assert "belongs to customer" in wrong_customer.stderr
    bad_token = install(
        "--api",
        api,
        "--token",
        "mm_nope",
        "--terminal-id",
        "TN8",
        "--customer",
        str(world.ids["customer_a"]),
        "--site-out",
        str(out),
    )
    assert bad_token.returncode == 1 and "unauthorized" in bad_token.stderr
    customer = install(
        "--api",
        api,
        "--token",
        tokens["admin_a"],
        "--terminal-id",
        "TN8",
        "--customer",
        str(world.ids["customer_a"]),
        "--site-out",
        str(out),
    )
    assert customer.returncode == 1 and "forbidden" in customer.stderr
    assert not out.exists()
    with world.session() as s:
        assert s.get(Terminal, "TN8") is None
    dead = install(
        "--api",
        "http://127.0.0.1:9/api/v1",
        "--token",
        "mm_x",
        "--terminal-id",
        "TN8",
        "--customer",
        "1",
        "--site-out",
        str(out),
    )
    assert dead.returncode == 1 and "cannot reach" in dead.stderr
    for r in (wrong_customer, bad_token, customer, dead):
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_provisioned_password_logs_in_to_the_real_broker(
    served: Any, world: Any, tmp_path: Path
) -> None:
    """The broker's password file comes from the terminal table (``$7$`` hashes):
    the password in the written site file is accepted, an old one is not."""
    api, tokens = served
    out = tmp_path / "site.json"
    r = install(
        "--api",
        api,
        "--token",
        tokens["operator"],
        "--terminal-id",
        "TN9",
        "--customer",
        str(world.ids["customer_b"]),
        "--site-out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    site = json.loads(out.read_text())
    with world.session() as s:
        terminal = s.get(Terminal, "TN9")
        assert terminal is not None and terminal.credential_hash is not None
        account = Account("TN9", terminal.credential_hash, BrokerRole.TERMINAL)
    with MosquittoBroker(tmp_path / "mqtt", [account]) as broker:
        with broker.client(
            "terminal", site["credentials"]["username"], site["credentials"]["password"]
        ) as client:
            assert not client.connect().is_failure
        with broker.client("terminal", "TN9", "not-the-password") as client:
            assert client.connect().is_failure
