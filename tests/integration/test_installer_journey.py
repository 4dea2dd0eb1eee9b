"""The installer's journey, from registration to data on the customer's screen,
with nothing but the product's own tools and nothing mocked:

1. an operator registers the terminal with its contract through the REST API;
2. the installer probes the RS-485 bus (``mimamori-install probe --write``
   puts the wiring it identified into the site file) and runs
   ``mimamori-install provision``, which has the cloud make the terminal's
   credentials and writes them into that site file;
3. the broker account appears by itself (the reconciler, as deployed);
4. ``mimamori-install flash`` puts the board bundle (built with
   ``--with-umqtt``), that site file, the Wi-Fi settings and the broker's CA
   on a board, the virtual ESP32 (real MicroPython, its UART 2 on the
   sensors' pty), and resets it: ``main.py`` starts the agent, which joins
   the site's Wi-Fi, sets its clock by NTP and connects over TLS;
5. within 30 s of that reset it is online in the API as a MicroPython
   terminal, and the installer's ``sample_now`` brings its first samples
   to the API at once.

Services: the project's Mosquitto (TLS terminal listener, dynamic
security), the Flask app on a real WSGI server, the ingest as a process,
the reconciler in a thread, simulated sensors on a pty, an SNTP server the
board's network resolves the site's NTP name to (as a site's network
reaches its NTP server). The broker's public name is ``localhost``, the
name on the test broker's certificate, which the board's network resolves
to this machine. The board bundle is the session's (``board_bundle``,
shared with the HIL suite). About 25 s, most of it the flash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cloud import db
from cloud.broker import account_from_row
from cloud.brokersync.reconciler import Reconciler, ReconcilerOptions
from cloud.models import utcnow
from cloud.services.publisher import PahoPublisher
from firmware_sim.sntp import SntpServer
from tests.support import ingest as S
from tests.support.api import issue_tokens
from tests.support.broker import HOST, MosquittoBroker
from tests.support.sim import SimProcess
from tests.support.virtual_board import VirtualBoard
from tests.support.web import SEAL_PRIVATE_KEY, LiveServer, make_app

pytestmark = pytest.mark.integration


REPO = Path(__file__).resolve().parents[2]
TID = "TJ1"
PROMISE_S = 30.0
BROKER_NAME = "localhost"  # the name on the test broker's certificate
SSID, WLAN_KEY = "substation-3", "substation-3-key"  # the site's access point, not a secret
NTP_ADDRESS = "10.0.0.123"  # the NTP server's address on the board's network


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    services = [
        account_from_row("ingest", S.INGEST_PASSWORD, "ingest"),
        account_from_row("web", "pw-web", "web"),
    ]
    with MosquittoBroker(tmp_path / "broker", services, tls=True) as b:
        yield b


def api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.installer", *args],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "MIMAMORI_API_TOKEN"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def board_network(site: dict[str, Any], ntp: SntpServer) -> dict[str, Any]:
    """The site's network as the board sees it: its access point, the broker's
    name and the site's NTP server (edge.config's default unless the site names
    one) resolving to services on this machine."""
    ntp_name = site.get("clock", {}).get("ntp", "pool.ntp.org")
    return {
        "wlan": [f"{SSID}:{WLAN_KEY}"],
        "dns": {BROKER_NAME: HOST, ntp_name: NTP_ADDRESS},
        "routes": {f"{NTP_ADDRESS}:123": (HOST, ntp.port)},
    }


def test_registered_provisioned_flashed_and_online_with_samples_within_30_s(  # noqa: PLR0917
    world: Any,
    broker: MosquittoBroker,
    insulation_sim: SimProcess,
    board_bundle: Path,
    sntp: SntpServer,
    tmp_path: Path,
) -> None:
    publisher = PahoPublisher(HOST, broker.ports["service"], "web", "pw-web", timeout_s=5.0)
    app = make_app(
        world,
        utcnow,
        broker_public_host=BROKER_NAME,
        broker_public_port=broker.ports["terminal_tls"],
        broker_public_tls=True,
        publisher=publisher,
    )
    tokens = issue_tokens(world)
    reconciler = Reconciler(
        db.session_factory(world.engine),
        lambda: broker.control(timeout_s=5.0),
        SEAL_PRIVATE_KEY,
        ReconcilerOptions(poll_s=0.5, retry_max_s=1.0),
    )
    syncing = threading.Thread(target=reconciler.run, name="reconciler")
    syncing.start()
    worker = S.IngestProcess(
        broker, tmp_path, "ingest-journey", "journey", {"MIMAMORI_DATABASE_URL": world.url}
    )
    try:
        with LiveServer(app) as server:
            base = server.url + "/api/v1"
            worker.start()
            # 1. The operator registers the terminal, its contract starting today.
            today = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo")).date()
            registered = api(
                base,
                tokens["operator"],
                "POST",
                "/terminals",
                {
                    "id": TID,
                    "customer_id": world.ids["customer_a"],
                    "name": "Substation 3",
                    "contract_start": today.isoformat(),
                },
            )
            assert (registered["status"], registered["provisioned"]) == ("active", False)

            # 2. On site: probe the bus (the wiring goes into the site file), provision.
            site_path = tmp_path / "site.json"
            probe = install(
                "probe",
                "--port",
                insulation_sim.endpoints["pty"],
                "--baud",
                "9600",
                "--units",
                "1-3",
                "--site",
                str(site_path),
                "--write",
            )
            assert probe.returncode == 0, probe.stderr
            assert "IM-100" in probe.stdout, probe.stdout
            provision = install(
                "provision",
                "--api",
                base,
                "--token",
                tokens["installer"],
                "--terminal-id",
                TID,
                "--customer",
                str(world.ids["customer_a"]),
                "--site-out",
                str(site_path),
            )
            assert provision.returncode == 0, provision.stderr
            site = json.loads(site_path.read_text())
            assert site["broker"] == {
                "host": BROKER_NAME,
                "port": broker.ports["terminal_tls"],
                "tls": True,
            }
            assert [w["unit"] for w in site["wiring"]] == [1]  # probe's, kept by provision

            # 3-4. Flash the board wired to the bus; the flash ends with its reset.
            board_json = tmp_path / "board.json"
            board_json.write_text(json.dumps({"wlan": {"ssid": SSID, "password": WLAN_KEY}}))
            assert broker.pki is not None
            with VirtualBoard(
                tmp_path / "flash",
                uarts={2: insulation_sim.endpoints["pty"]},
                **board_network(site, sntp),
            ) as board:
                flash = install(
                    "flash",
                    "--port",
                    board.port,
                    "--bundle",
                    str(board_bundle),
                    "--site",
                    str(site_path),
                    "--board-config",
                    str(board_json),
                    "--ca",
                    str(broker.pki.ca),
                    "--timeout",
                    "15",  # a busy machine's virtual board may answer slowly
                )
                reset = time.monotonic()
                assert flash.returncode == 0, flash.stdout + flash.stderr

                def left() -> float:
                    return max(0.1, PROMISE_S - (time.monotonic() - reset))

                def terminal() -> dict[str, Any]:
                    got: dict[str, Any] = api(base, tokens["admin_a"], "GET", f"/terminals/{TID}")
                    return got

                def said() -> str:
                    return f"board console:\n{board.console()[-3000:]}\n{board.log()[-2000:]}"

                S.wait_for(
                    lambda: terminal()["connectivity"] == "online",
                    left(),
                    f"{TID} online; {said()}",
                )
                sent = api(
                    base,
                    tokens["installer"],
                    "POST",
                    f"/terminals/{TID}/commands",
                    {"name": "sample_now"},
                )
                assert sent["state"] == "delivered", sent
                end = int(time.time()) + 60
                start = end - 3600

                def samples() -> list[Any]:
                    page = api(
                        base,
                        tokens["admin_a"],
                        "GET",
                        f"/terminals/{TID}/samples?channel=leak1.ior&start={start}&end={end}",
                    )
                    return list(page["items"])

                first = S.wait_for(samples, left(), f"the first samples in the API; {said()}")
                elapsed = time.monotonic() - reset
                assert elapsed <= PROMISE_S
                path = f"/terminals/{TID}/commands/{sent['id']}"
                S.wait_for(
                    lambda: api(base, tokens["admin_a"], "GET", path)["state"] == "succeeded",
                    PROMISE_S,
                    f"the terminal's answer to sample_now; {said()}",
                )
                shown = terminal()
    finally:
        worker.stop()
        reconciler.stop()
        syncing.join(10)
    print(f"installer journey: online with samples {elapsed:.1f} s after the reset")
    assert first[0]["value"] >= 0
    # the board build under MicroPython, not a virtual terminal on CPython
    assert "micropython" in shown["firmware_version"], shown
