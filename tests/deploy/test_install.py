"""The production install, end to end, as docs/deployment.md has an operator do it.

``mimamori-admin install`` runs into a scratch root against its own
PostgreSQL cluster (Debian's initdb/pg_ctl), an InfluxDB that requires
accounts, and an SMTP server (aiosmtpd); then every process is started
from the systemd units the install wrote, with their ExecStart,
EnvironmentFile and WorkingDirectory (tests/support/deploy.py): the broker
(Mosquitto with TLS on both listeners), the reconciler, gunicorn, two
ingest workers, notify and the scheduler. Then, through the product only:

- ``mimamori-admin create-operator`` (password on stdin; another invited);
- the operator creates a customer on the site, registers and provisions a
  terminal and sets a leakage threshold and a mail target through the API;
- a virtual terminal (``python -m edge.host``, TLS) reads simulated sensors;
- its samples reach the API, its alarm reaches the SMTP server as mail;
- ``/readyz`` and ``python -m cloud.ops health`` say every component is up;
- ``python -m cloud.ops backup``, then a restore drill into the scratch
  databases the install made; a drill without its InfluxDB target is refused;
- the install runs again and changes nothing that matters (same secrets).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import pytest

from cloud.admin import envfile
from cloud.demo.procs import Child
from tests.support.broker import make_pki
from tests.support.deploy import read_unit, start_unit
from tests.support.influx import ADMIN, InfluxServer
from tests.support.ingest import wait_for
from tests.support.postgres import PostgresServer, free_port
from tests.support.sim import SimProcess
from tests.support.smtp import SmtpSink
from tests.support.virtual_terminal import TerminalProcess

pytestmark = [pytest.mark.integration, pytest.mark.deploy, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ADMIN_CLI = Path(sys.prefix) / "bin" / "mimamori-admin"
TID = "DEP1"
OPERATOR = "ops@mimamori.test"
OPERATOR_PASSWORD = "operator pass 1"
START_S = 60.0
FLOW_S = 60.0


@contextlib.contextmanager
def services(tmp: Path) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(PostgresServer())
        influx = stack.enter_context(InfluxServer(auth=True))
        smtp = stack.enter_context(SmtpSink())
        pki = make_pki(tmp / "pki")
        yield {"pg": pg, "influx": influx, "smtp": smtp, "pki": pki}


def admin(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(ADMIN_CLI), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env={**_clean_env(), **(env or {})},
    )
    assert done.returncode == 0, f"mimamori-admin {args[0]}: {done.stderr}\n{done.stdout}"
    return done.stdout


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MIMAMORI_")}


class Site:
    """A logged-in browser session and an API token on the installed site."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        self.token = ""

    def get(self, path: str) -> tuple[int, str]:
        try:
            with self.opener.open(self.base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def form(self, page: str, action: str, data: dict[str, str]) -> tuple[int, str]:
        _, html = self.get(page)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
        assert token, f"no form on {page}"
        body = urllib.parse.urlencode({"csrf_token": token.group(1), **data}).encode()
        try:
            with self.opener.open(self.base + action, body, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + "/api/v1" + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: {err.code} {err.read().decode()}") from err


def test_install_start_and_operate_a_production_site(tmp_path: Path) -> None:
    root = tmp_path / "root"
    me = pwd.getpwuid(os.getuid()).pw_name
    web_port, terminal_port, service_port = free_port(), free_port(), free_port()
    started = time.monotonic()
    with services(tmp_path) as svc, contextlib.ExitStack() as running:
        pg, smtp, pki = svc["pg"], svc["smtp"], svc["pki"]
        install_args = [
            "install",
            "--root", str(root),
            "--app-dir", str(REPO),
            # A scratch root creates no system users: this test's own runs everything.
            "--user", me,
            "--broker-user", me,
            "--site-url", f"http://127.0.0.1:{web_port}",
            "--web-bind", f"127.0.0.1:{web_port}",
            "--web-workers", "2",
            "--broker-name", "localhost",
            "--mail-from", "alerts@mimamori.test",
            "--tls-ca", str(pki.ca),
            "--tls-ca-key", str(pki.ca.with_suffix(".key")),
            "--terminal-port", str(terminal_port),
            "--service-port", str(service_port),
            "--pg-admin", f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres",
            "--db-port", str(pg.port),
            "--influx-url", svc["influx"].url,
            "--influx-admin-user", ADMIN[0],
            "--smtp-host", "127.0.0.1",
            "--smtp-port", str(smtp.port),
        ]  # fmt: skip
        influx_env = {"MIMAMORI_INFLUX_ADMIN_PASSWORD": ADMIN[1]}
        first = admin(*install_args, env=influx_env)
        assert "next: systemctl enable --now mimamori-broker" in first
        etc = root / "etc" / "mimamori"
        env = envfile.read(etc / "env")
        assert oct((etc / "env").stat().st_mode & 0o777) == "0o640"
        assert oct((etc / "brokersync.env").stat().st_mode & 0o777) == "0o600"
        print(f"install: {time.monotonic() - started:.1f} s")

        # -- every process from its unit, in the order systemd would start them
        units = root / "etc" / "systemd" / "system"
        logs = tmp_path / "logs"
        procs: dict[str, Child] = {}

        def start(name: str, instance: str = "") -> Child:
            unit = read_unit(units / name, instance)
            child = start_unit(unit, logs)
            running.callback(child.stop)
            procs[unit.name] = child
            return child

        broker = start("mimamori-broker.service")
        broker.wait_port("127.0.0.1", service_port, START_S)
        broker.wait_port("127.0.0.1", terminal_port, START_S)
        start("mimamori-brokersync.service").wait_log("broker account sync on", START_S)
        web = start("mimamori-web.service")
        web.wait_port("127.0.0.1", web_port, START_S)
        for n in ("1", "2"):
            start("mimamori-ingest@.service", n).wait_log(" on localhost:", START_S)
        start("mimamori-notify.service")
        start("mimamori-scheduler.service")
        print(f"all started: {time.monotonic() - started:.1f} s")

        # -- the first operator, and a second one invited by mail
        admin(
            "create-operator", OPERATOR, "--language", "en", "--env-file", str(etc / "env"),
            stdin=OPERATOR_PASSWORD + "\n",
        )  # fmt: skip
        admin(
            "create-operator", "second@mimamori.test", "--invite", "--env-file",
            str(etc / "env"),
        )  # fmt: skip
        [invitation] = smtp.wait_for(1, 30)
        assert invitation["Subject"] == "みまもり: アカウント作成のご案内"
        assert f"http://127.0.0.1:{web_port}/welcome/" in invitation.body

        print(f"operators: {time.monotonic() - started:.1f} s")
        site = Site(f"http://127.0.0.1:{web_port}")
        status, _ = site.form(
            "/login", "/login", {"email": OPERATOR, "password": OPERATOR_PASSWORD}
        )
        assert status == 200, "login failed"
        # Operators must set up two-step login before anything else: the
        # site shows the enrolment page (QR code and the key as text).
        status, html = site.get("/admin/customers")
        assert "Set up two-step login" in html, "no enrolment page"
        key = re.search(r'<code class="js-secret">([A-Z2-7 ]+)</code>', html).group(1)
        totp = pyotp.TOTP(key.replace(" ", ""))
        status, html = site.form("/account/two-factor", "/account/two-factor", {"code": totp.now()})
        assert status == 200 and "Recovery codes" in html, "enrolment failed"
        status, html = site.form(
            "/admin/customers",
            "/admin/customers",
            {"name": "Deploy Denki", "plan": "standard", "timezone": "Asia/Tokyo",
             "language": "en", "active": "1"},
        )  # fmt: skip
        customer = int(re.findall(r"/admin/customers/(\d+)", html)[-1])
        # Minting a token asks for a code too; the one used to enrol is spent,
        # the next step's is good (one step of drift is accepted).
        status, html = site.form(
            "/api/v1/token", "/api/v1/token",
            {"password": OPERATOR_PASSWORD, "code": totp.at(time.time() + 30)},
        )  # fmt: skip
        site.token = re.search(r"<code[^>]*>([^<]+)</code>", html).group(1).strip()

        # -- register, provision, threshold, mail target: the API
        today = datetime.now(ZoneInfo("Asia/Tokyo")).date().isoformat()
        site.api(
            "POST", "/terminals",
            {"id": TID, "customer_id": customer, "name": "Sub 1", "contract_start": today},
        )  # fmt: skip
        terminal_site = site.api("POST", f"/terminals/{TID}/provision")
        assert terminal_site["broker"] == {"host": "localhost", "port": terminal_port, "tls": True}
        site.api(
            "POST", "/targets",
            {"customer_id": customer, "channel": "email", "address": "duty@customer.test",
             "language": "en"},
        )  # fmt: skip
        # -- a virtual terminal on simulated sensors, over TLS
        sim = running.enter_context(
            SimProcess("--pty", "--device", "insulation:1", "--speed", "0", "--seed", "3")
        )
        terminal_site |= {
            "wiring": [{"unit": 1, "profile": "IM-100", "name": "leak1"}],
            "sample": {"interval": 1},
            "bus": {"timeout_ms": 200, "retries": 1},
        }
        terminal = running.enter_context(
            TerminalProcess(
                tmp_path / "terminal",
                terminal_site,
                sim.endpoints["pty"],
                args=("--ca", str(etc / "broker" / "ca.pem")),
            )
        )
        end = int(time.time()) + 600

        def samples() -> list[Any]:
            path = f"/terminals/{TID}/samples?channel=leak1.ior&start={end - 3600}&end={end}"
            return list(site.api("GET", path)["items"])

        def channels() -> list[Any]:
            return list(site.api("GET", f"/terminals/{TID}/channels")["items"])

        wait_for(channels, FLOW_S, f"the terminal's birth; terminal:\n{terminal.log()}")
        # Thresholds name the channels the terminal announced: the web pushes the
        # config through the broker's TLS service listener, the terminal applies it.
        site.api(
            "POST", f"/terminals/{TID}/thresholds",
            {"channel": "leak1.ior", "cond": "leak", "warn": 0.001, "alarm": 0.002},
        )  # fmt: skip
        # Samples go up once a minute; the installer's command sends them now.
        site.api("POST", f"/terminals/{TID}/commands", {"name": "sample_now"})
        wait_for(samples, FLOW_S, f"samples in the API; terminal:\n{terminal.log()}")
        print(f"samples: {time.monotonic() - started:.1f} s")
        alarm_mail = [
            m
            for m in smtp.wait_for(2, FLOW_S)
            if "duty@customer.test" in m.rcpt_tos
        ]  # fmt: skip
        assert alarm_mail and TID in alarm_mail[0].body
        print(f"data and alarm mail: {time.monotonic() - started:.1f} s")

        # -- readiness and health, as monitoring sees them
        status, body = site.get("/readyz")
        assert status == 200, body
        assert all(c["ok"] for c in json.loads(body)["checks"].values())
        ops_env = {**_clean_env(), **env}
        health = subprocess.run(
            [sys.executable, "-m", "cloud.ops", "health"],
            cwd=REPO, env=ops_env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert health.returncode == 0, health.stdout + health.stderr
        for component in ("database", "timeseries", "broker", "ingest", "web"):
            assert re.search(rf"^{component}\s+up", health.stdout, re.M), health.stdout
        assert "not authorised" not in (logs / "mimamori-broker.service.log").read_text()

        # -- backup, and a restore drill into the install's scratch databases
        def ops(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                [sys.executable, "-m", "cloud.ops", *args],
                cwd=REPO, env=ops_env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if ok:
                assert done.returncode == 0, done.stderr
            return done

        made = ops("backup").stdout.strip()
        assert made in ops("backups").stdout
        refused = ops("restore", made, "--database", "mimamori_drill", ok=False)
        assert refused.returncode == 1 and "--influx-database" in refused.stderr
        drill = ops(
            "restore", made, "--database", "mimamori_drill", "--influx-database", "mimamori_drill"
        ).stdout
        assert "checksums match" in drill and "time-series points" in drill
        print(f"backup and drill: {time.monotonic() - started:.1f} s")

        # -- the install again: nothing rotated, the site keeps running
        again = admin(*install_args, env=influx_env)
        assert "secrets: 5 kept, 0 generated" in again
        assert envfile.read(etc / "env") == env
        status, _ = site.get("/readyz")
        assert status == 200
        for name, child in procs.items():
            assert child.running(), f"{name} exited:\n{child.log_tail()}"
            # Nothing failed on the way, quietly or not.
            for line in child.log_text().splitlines():
                assert " ERROR " not in line and "Traceback" not in line, f"{name}: {line}"
                assert "lost its connection" not in line, f"{name}: {line}"
    print(f"deploy test: {time.monotonic() - started:.1f} s")
