"""``python -m cloud.demo``: the whole service on this machine with one command.

    python -m cloud.demo [--port 8000] [--terminals 20] [--boards 0] [--data-dir build/demo]
                         [--scenario firmware_sim/scenarios/demo.toml]

Starts, each as its own process with its log in ``<data-dir>/logs``:
Mosquitto (config from :mod:`cloud.broker`, free loopback ports), the broker
account reconciler (:mod:`cloud.brokersync`: terminals registered or
provisioned in the web site or the API can connect within seconds), the SMTP
sink (:mod:`cloud.demo.mailsink`), the chat receiver the seeded chat target
posts to (:mod:`cloud.demo.chatsink`), the SFTP server the seeded forwarding
endpoint delivers hourly CSV files to (:mod:`cloud.demo.sftpsink`), the
ingest worker, the notification worker, the scheduler (alarm sweep,
reminders, health, backups), the web site, and a fleet of virtual terminals
with simulated sensors (``python -m firmware_sim fleet``) playing a
scenario: in the shipped one, leakage on two terminals raises a warning
within a minute and an alarm within two, and recovers at four minutes
(sensor faults, a lost link and a reboot on others). With ``--boards N`` the
next N terminals of the scenario run as virtual boards (``python -m
firmware_sim boards``): the board build under real MicroPython, built with
``mimamori-install build --with-umqtt`` and flashed with ``mimamori-install
flash``, each with its own simulated bus; the web site shows them as
MicroPython terminals (their firmware names the interpreter). They trust the
demo's own update signing key (``<data-dir>/ota``), and a signed update for
them waits there to be uploaded on the Firmware page (docs/ota.md).

The database is a fresh SQLite file, migrated and seeded (:mod:`cloud.demo.seed`)
on every run; ``<data-dir>`` is wiped at start (only if an earlier demo made
it). Logins and terminal passwords are generated per run, printed, and kept
in ``<data-dir>/credentials.json`` (mode 0600). Nothing listens on
1883/5432 or anything but 127.0.0.1.

Ctrl-C (SIGINT) or SIGTERM stops every process in order (terminals first,
broker last): SIGTERM to each process group, SIGKILL after 10 s. Exit 0
after a clean stop, 1 if a part failed to start or died, 2 for bad options
or a missing Mosquitto.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from cloud import db
from cloud.broker import account_from_row
from cloud.broker.dynsec import ADMIN_USERNAME
from cloud.demo import seed as demo_seed
from cloud.demo.broker import (
    HOST,
    BrokerMissing,
    BrokerPorts,
    broker_child,
    find_mosquitto,
)
from cloud.demo.procs import RUN_ENV, Child, StartError, free_port, port_free
from firmware_sim import scenario as fleet_scenario
from firmware_sim.errors import SimError

REPO = Path(__file__).resolve().parents[2]
MARKER = ".mimamori-demo"
DEFAULT_SCENARIO = REPO / "firmware_sim" / "scenarios" / "demo.toml"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
# Stopping order: the cloud first, so the terminals' death frames at the end
# do not become 20 offline alarms mailed during shutdown; the broker last.
STOP_ORDER = (
    "web",
    "scheduler",
    "notify",
    "ingest",
    "fleet",
    "boards",
    "mailsink",
    "chatsink",
    "sftpsink",
    "brokersync",
    "broker",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m cloud.demo", description="Run the whole mimamori service locally."
    )
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="web site port (default %(default)s; a free one if taken, 0: any)",
    )
    p.add_argument("--terminals", type=int, default=20, help="virtual terminals (default 20)")
    p.add_argument(
        "--boards",
        type=int,
        default=0,
        help="more terminals as virtual MicroPython boards (default 0; make demo runs 2)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("build/demo"),
        help="this run's files: database, logs, mail (default %(default)s)",
    )
    p.add_argument(
        "--scenario",
        type=Path,
        default=DEFAULT_SCENARIO,
        help="fleet scenario (default firmware_sim/scenarios/demo.toml)",
    )
    args = p.parse_args(argv)
    if not 1 <= args.terminals <= 200:
        p.error("--terminals must be 1..200")
    if not 0 <= args.boards <= 8:
        p.error("--boards must be 0..8 (each is a MicroPython interpreter)")
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    return args


def prepare_dir(data: Path) -> None:
    """Empty ``data`` for a new run; refuse a non-empty directory no demo made."""
    if data.exists() and any(data.iterdir()):
        if not (data / MARKER).exists():
            raise SystemExit(
                f"error: {data} is not empty and was not made by the demo; "
                "choose another --data-dir"
            )
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("made by python -m cloud.demo; wiped at every run\n")


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class Demo:
    """One run: the files, the children, the order they start and stop in."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data = args.data_dir.resolve()
        self.logs = self.data / "logs"
        self.children: list[Child] = []
        # Marks every process of this run (tests may choose it by setting it).
        self.token = os.environ.get(RUN_ENV) or secrets.token_hex(8)
        self.stopping = False
        self.ota_public = ""  # the demo's update signing key (made at start)
        self.ota_archive: Path | None = None  # a signed update for the boards
        self.chat_page = ""  # the chat receiver's page (set at start)
        self.files_dir: Path | None = None  # where forwarded CSV files land

    # -- set-up ------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIMAMORI_")}
        env.update(
            {
                RUN_ENV: self.token,
                "PYTHONUNBUFFERED": "1",
                "MIMAMORI_INSTANCE_FILE": str(self.data / "mimamori.toml"),
            }
        )
        env.update(extra)
        return env

    def child(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stop_signal: int = signal.SIGTERM,
        env: dict[str, str] | None = None,
    ) -> Child:
        c = Child(
            name,
            argv,
            self.logs / f"{name}.log",
            env=self.env(**(env or {})),
            cwd=REPO,
            stop_signal=stop_signal,
        )
        self.children.append(c)
        return c.start()

    def run(self) -> int:
        find_mosquitto()
        prepare_dir(self.data)
        self.logs.mkdir()
        web_port = self.args.port
        if web_port == 0 or not port_free(HOST, web_port):
            if web_port:
                print(f"port {web_port} is taken; using a free one", flush=True)
            web_port = free_port()
        url = f"http://localhost:{web_port}/"
        self.ota_public = self._ota_key()
        try:
            sc = fleet_scenario.load(self.args.scenario)
        except SimError as err:
            raise StartError(f"scenario {self.args.scenario}: {err}") from err
        tids = [sc.tid(n) for n in range(1, self.args.terminals + self.args.boards + 1)]
        creds = demo_seed.new_credentials(tids)
        chat, file_server = self._start_receivers()
        database_url = f"sqlite:///{self.data / 'mimamori.sqlite3'}"
        (self.data / "mimamori.toml").write_text(
            f'database_url = "{database_url}"\ntimeseries_backend = "sql"\n', encoding="utf-8"
        )

        step("database: migrating and seeding")
        db.upgrade(database_url)
        self._seed(database_url, creds, sc.cloud or None, chat, file_server)
        write_private(
            self.data / "credentials.json",
            json.dumps(
                {
                    "url": url,
                    "customer": {
                        "email": demo_seed.CUSTOMER_EMAIL,
                        "password": creds.customer_password,
                    },
                    "operator": {
                        "email": demo_seed.OPERATOR_EMAIL,
                        "password": creds.operator_password,
                        "totp_secret": creds.operator_totp,
                    },
                    "terminals": creds.terminals,
                },
                indent=2,
                ensure_ascii=False,
            ),
        )

        ports = self._start_broker(creds)
        self._write_ops(web_port, ports.service)
        write_private(self.data / "broker-admin.password", creds.broker_admin)
        write_private(self.data / "broker-seal.key", creds.seal_private)
        py = sys.executable
        sync = self.child(
            "brokersync",
            [
                py,
                "-m",
                "cloud.brokersync",
                "run",
                "--host",
                HOST,
                "--port",
                str(ports.terminal),
                "--admin-password-file",
                str(self.data / "broker-admin.password"),
                "--key-file",
                str(self.data / "broker-seal.key"),
            ],
        )
        sync.wait_log("broker account sync on", START_TIMEOUT)

        # Port 0: the sink binds a free port itself and says which (no race).
        sink = self.child(
            "mailsink",
            [py, "-m", "cloud.demo.mailsink", "--dir", str(self.data / "mail"), "--port", "0"],
        )
        sink.wait_log("ready", START_TIMEOUT)
        found = re.search(r"^smtp [0-9.]+:([0-9]+)$", sink.log_text(), re.MULTILINE)
        if found is None:
            raise StartError(f"mailsink did not say its port:\n{sink.log_tail()}")
        smtp_port = int(found.group(1))
        step(f"mail: SMTP sink on {HOST}:{smtp_port}, messages in {self.data / 'mail'}")

        step("cloud: ingest, notify, scheduler, web")
        write_private(self.data / "ingest.password", creds.service["ingest"])
        ingest = self.child(
            "ingest",
            [
                py,
                "-m",
                "cloud.ingest",
                "--host",
                HOST,
                "--port",
                str(ports.service),
                "--username",
                "ingest",
                "--password-file",
                str(self.data / "ingest.password"),
                "--client-id",
                "demo-ingest",
                "--batch-ms",
                "200",
                "--stats-interval",
                "60",
                "--stats-file",
                str(self.data / "ingest-stats.json"),
            ],
        )
        smtp = {
            "MIMAMORI_SMTP_HOST": HOST,
            "MIMAMORI_SMTP_PORT": str(smtp_port),
            "MIMAMORI_MAIL_FROM": "mimamori-demo@localhost.localdomain",
            "MIMAMORI_SITE_URL": url,
            # The demo's chat receiver and SFTP server listen on loopback,
            # which the address guard refuses unless allowed (docs/security.md).
            "MIMAMORI_WEBHOOK_ALLOW": f"{HOST}/32",
        }
        notify = self.child(
            "notify",
            [py, "-m", "cloud.notify", "-v", "run", "--interval", "1", "--retry-base", "5"],
            env=smtp,
        )
        scheduler = self.child(
            "scheduler",
            [
                py,
                "-m",
                "cloud.ops.scheduler",
                "--holder",
                "demo",
                "--ops-file",
                str(self.data / "ops.toml"),
                "--instance-file",
                str(self.data / "mimamori.toml"),
            ],
            env={"MIMAMORI_MONITOR_MQTT_PASSWORD": creds.service["monitor"]},
        )
        web = self.child(
            "web",
            [py, "-m", "cloud.app", "--host", HOST, "--port", str(web_port)],
            stop_signal=signal.SIGINT,
            env={
                "MIMAMORI_SECRET_KEY": secrets.token_urlsafe(32),
                # Plain HTTP on loopback: no Secure flag, or no login.
                "MIMAMORI_COOKIE_SECURE": "0",
                "MIMAMORI_MQTT_HOST": HOST,
                "MIMAMORI_MQTT_PORT": str(ports.service),
                "MIMAMORI_MQTT_USERNAME": "web",
                "MIMAMORI_MQTT_PASSWORD": creds.service["web"],
                "MIMAMORI_BROKER_PUBLIC_HOST": HOST,
                "MIMAMORI_BROKER_PUBLIC_PORT": str(ports.terminal),
                "MIMAMORI_BROKER_PUBLIC_TLS": "0",
                "MIMAMORI_BROKER_SEAL_KEY": creds.seal_public,
                "MIMAMORI_MAILSINK_DIR": str(self.data / "mail"),
                "MIMAMORI_OTA_KEYS": self.ota_public,
                **smtp,
            },
        )
        ingest.wait_log(" on 127.0.0.1:", START_TIMEOUT)
        web.wait_port(HOST, web_port, START_TIMEOUT)
        for c in (notify, scheduler):
            c.wait_until(c.running, "start", 1.0)

        step(f"fleet: {self.args.terminals} virtual terminals, scenario {self.args.scenario}")
        accounts_csv = self.data / "fleet-accounts.csv"
        write_private(
            accounts_csv, "".join(f"{tid},{pw},terminal\n" for tid, pw in creds.terminals.items())
        )
        fleet = self.child(
            "fleet",
            [
                py,
                "-m",
                "firmware_sim",
                "fleet",
                "--scenario",
                str(self.args.scenario),
                "--broker",
                f"{HOST}:{ports.terminal}",
                "--accounts",
                str(accounts_csv),
                "--terminals",
                str(self.args.terminals),
                "--state-dir",
                str(self.data / "terminals"),
                "--duration",
                "0",
                "--progress",
                "30",
            ],
        )
        fleet.wait_log(f"{self.args.terminals} terminals in", START_TIMEOUT)
        if self.args.boards:
            self._boards(ports.terminal, accounts_csv)
        self._banner(url, creds, list(sc.events))
        return self.supervise()

    def _installer(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "edge.installer", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise StartError(f"mimamori-install {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def _ota_key(self) -> str:
        """The demo operator's update signing key (docs/ota.md): its public half."""
        key = self.data / "ota" / "demo-ota.key"
        key.parent.mkdir()
        self._installer("keygen", "--out", str(key))
        return key.with_suffix(".pub").read_text().strip()

    def _ota_update(self) -> None:
        """A signed update for the boards, ready to upload on the Firmware page: this
        checkout with the next version name, built and signed as an operator would."""
        ota_dir = self.data / "ota"
        src = ota_dir / "src"
        for pkg in ("protocol", "edge"):
            shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        init = src / "edge" / "__init__.py"
        text = init.read_text(encoding="utf-8")
        init.write_text(
            re.sub(r'FIRMWARE_VERSION = "([^"]*)"', r'FIRMWARE_VERSION = "\1-update"', text),
            encoding="utf-8",
        )
        bundle = ota_dir / "bundle"
        self._installer("build", "--source", str(src), "--with-umqtt", "--out", str(bundle),
                        "--trust", self.ota_public)  # fmt: skip
        self.ota_archive = ota_dir / "mimamori-update.tar"
        self._installer("sign", "--key", str(ota_dir / "demo-ota.key"), "--bundle", str(bundle),
                        "--archive", str(self.ota_archive))  # fmt: skip
        shutil.rmtree(src)

    def _boards(self, terminal_port: int, accounts_csv: Path) -> None:
        """Build the board bundle as an installer does and start the virtual boards."""
        n, first = self.args.boards, self.args.terminals + 1
        step(f"boards: building the board bundle, then {n} virtual MicroPython boards")
        bundle = self.data / "board-bundle"
        self._installer("build", "--with-umqtt", "--out", str(bundle), "--trust", self.ota_public)
        self._ota_update()
        boards = self.child(
            "boards",
            [
                sys.executable,
                "-m",
                "firmware_sim",
                "boards",
                "--scenario",
                str(self.args.scenario),
                "--broker",
                f"{HOST}:{terminal_port}",
                "--accounts",
                str(accounts_csv),
                "--bundle",
                str(bundle),
                "--first",
                str(first),
                "--count",
                str(n),
                "--total",
                str(self.args.terminals + n),
                "--state-dir",
                str(self.data / "boards"),
            ],
        )
        boards.wait_log(f"{n} boards running", START_TIMEOUT + 30 * n)

    def _start_broker(self, creds: demo_seed.Credentials, attempts: int = 3) -> BrokerPorts:
        """Start Mosquitto on free ports; pick new ones if another program took
        one between choosing and binding (tests of other parts run alongside)."""
        accounts = [account_from_row(tid, pw, "terminal") for tid, pw in creds.terminals.items()]
        accounts += [account_from_row(name, pw, name) for name, pw in creds.service.items()]
        accounts.append(account_from_row(ADMIN_USERNAME, creds.broker_admin, "admin"))
        for attempt in range(1, attempts + 1):
            ports = BrokerPorts(terminal=free_port(), service=free_port())
            step(
                f"broker: mosquitto on {HOST}:{ports.terminal} (terminals), "
                f"{ports.service} (services)"
            )
            broker = broker_child(self.data / "broker", accounts, ports, self.env(), REPO)
            self.children.append(broker)
            broker.start()
            try:
                broker.wait_port(HOST, ports.terminal, START_TIMEOUT)
                broker.wait_port(HOST, ports.service, START_TIMEOUT)
                return ports
            except StartError:
                log = (self.data / "broker" / "mosquitto.log").read_text(errors="replace")
                if "Address already in use" not in log or attempt == attempts:
                    raise
                broker.stop(STOP_TIMEOUT)
                self.children.remove(broker)
                (self.data / "broker" / "mosquitto.log").unlink()
        raise AssertionError("unreachable")

    def _write_ops(self, web_port: int, service_port: int) -> None:
        d = self.data
        (d / "ops.toml").write_text(
            f'backup_dir = "{d / "backups"}"\n'
            f'log_dir = "{d / "logs" / "ops"}"\n'
            f'archive_dir = "{d / "archive"}"\n'
            f'reports_dir = "{d / "reports"}"\n'
            f'web_health_url = "http://{HOST}:{web_port}/healthz"\n'
            f'broker_host = "{HOST}"\nbroker_port = {service_port}\n'
            "health_interval_s = 60\n",
            encoding="utf-8",
        )

    def _start_receivers(self) -> tuple[str, demo_seed.FileServer]:
        """The customer's side: a chat receiver and an SFTP server, both on
        loopback; returns the chat target's Apprise address and the server."""
        py = sys.executable
        chat = self.child(
            "chatsink", [py, "-m", "cloud.demo.chatsink", "--dir", str(self.data / "chat")]
        )
        chat.wait_log("ready", START_TIMEOUT)
        found = re.search(r"^chat (http://\S+)$", chat.log_text(), re.MULTILINE)
        if found is None:
            raise StartError(f"chatsink did not say its address:\n{chat.log_tail()}")
        self.chat_page = found.group(1)
        address = f"ntfy://{self.chat_page.split('://', 1)[1]}{demo_seed.CHAT_TOPIC}"
        step(f"chat: ntfy-style receiver on {self.chat_page}, messages in {self.data / 'chat'}")

        # The endpoint's key pair is made here, so its public half can be
        # authorized before the server starts; the seed stores the private half.
        from cloud.notify import sftp  # noqa: PLC0415

        private, public = sftp.new_key("mimamori-demo-forwarding")
        keys = self.data / "sftp-authorized_keys"
        keys.write_text(public + "\n", encoding="ascii")
        root = self.data / "sftp"
        (root / demo_seed.SFTP_DIRECTORY.strip("/")).mkdir(parents=True)
        server = self.child(
            "sftpsink",
            [py, "-m", "cloud.demo.sftpsink", "--root", str(root), "--host-key",
             str(self.data / "sftp-host.key"), "--authorized-keys", str(keys),
             "--user", demo_seed.SFTP_USER],
        )  # fmt: skip
        server.wait_log("ready", START_TIMEOUT)
        log = server.log_text()
        port = re.search(r"^sftp [0-9.]+:([0-9]+)$", log, re.MULTILINE)
        key = re.search(r"^host-key (.+)$", log, re.MULTILINE)
        if port is None or key is None:
            raise StartError(f"sftpsink did not say its port and key:\n{server.log_tail()}")
        self.files_dir = root / demo_seed.SFTP_DIRECTORY.strip("/")
        step(f"files: SFTP server on {HOST}:{port.group(1)}, CSV files in {self.files_dir}")
        return address, demo_seed.FileServer(HOST, int(port.group(1)), key.group(1), private)

    def _seed(
        self,
        url: str,
        creds: demo_seed.Credentials,
        config: dict[str, Any] | None,
        chat: str = "",
        file_server: demo_seed.FileServer | None = None,
    ) -> None:
        from cloud.http.settings import WebSettings  # noqa: PLC0415
        from cloud.services.passwords import Passwords  # noqa: PLC0415

        web = WebSettings(development=True)  # only its password-hashing defaults matter here
        hasher = Passwords(
            web.argon2_time_cost,
            web.argon2_memory_kib,
            web.argon2_parallelism,
            web.password_min_length,
        )
        engine = db.make_engine(url)
        try:
            with db.session_factory(engine)() as session:
                demo_seed.seed(
                    session, creds, hasher.hash, config, chat=chat, file_server=file_server
                )
        finally:
            engine.dispose()

    def _banner(self, url: str, creds: demo_seed.Credentials, events: list[object]) -> None:
        print(
            "\n"
            "  mimamori demo is running\n"
            f"  web site:   {url}\n"
            f"  customer:   {demo_seed.CUSTOMER_EMAIL}  password {creds.customer_password}\n"
            f"  operator:   {demo_seed.OPERATOR_EMAIL}  password {creds.operator_password}\n"
            "              then a two-step login code: python -m cloud.demo.totp"
            f" --data-dir {self.args.data_dir}\n"
            f"              (or add the key {creds.operator_totp} to an authenticator app)\n"
            f"  alarm mail: {self.data / 'mail'} (SMTP sink; operator area)\n"
            f"  chat:       {self.chat_page} (the ntfy-style receiver the chat target posts to)\n"
            f"  CSV files:  {self.files_dir} (hourly, by SFTP; the endpoint: Forwarding)\n"
            f"  logs:       {self.logs}\n"
            + (
                f"  firmware:   a signed update for the boards, {self.ota_archive}:\n"
                "              upload it on Firmware (operator), roll it out to the boards\n"
                if self.ota_archive is not None
                else ""
            )
            + f"  scenario:   {self.args.scenario} ({len(events)} events; "
            "the shipped one: leakage\n"
            "              warning within a minute, alarm within two, recovery at four)\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )

    # -- running and stopping --------------------------------------------------------

    def supervise(self) -> int:
        """Wait for a stop signal; a child that dies on its own ends the run (1)."""
        while not self.stopping:
            for c in self.children:
                if not c.running():
                    code = c.proc.returncode if c.proc else None
                    print(
                        f"error: {c.name} exited ({code}); its log ends:\n{c.log_tail()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
            time.sleep(0.5)
        return 0

    def stop_all(self) -> None:
        rank = {name: k for k, name in enumerate(STOP_ORDER)}
        for c in sorted(self.children, key=lambda c: rank.get(c.name, -1)):
            if c.proc is None:
                continue
            code = c.stop(STOP_TIMEOUT)
            print(f"stopped {c.name} ({code})", flush=True)


def step(text: str) -> None:
    print(f"demo: {text}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    demo = Demo(args)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        if not demo.stopping:
            print(f"\ndemo: signal {signum}, stopping", flush=True)
        demo.stopping = True
        # Interrupt a start-up wait; the finally below stops what was started.
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        code = demo.run()
    except KeyboardInterrupt:
        code = 0
    except BrokerMissing as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    except (StartError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    finally:
        # A second Ctrl-C must not interrupt the stopping itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop_all()
    return code


if __name__ == "__main__":
    sys.exit(main())
