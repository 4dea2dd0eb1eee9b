"""``mimamori-admin install``: everything a production site needs, idempotent.

One run, in this order (each step says what it created and what it kept):

1. tools (mosquitto, psql, openssl) and the checkout (unit templates in
   ``deploy/systemd``, uPlot from ``npm ci`` in ``node_modules``);
2. system users: the service's (``mimamori``) and the broker's (Debian's
   ``mosquitto``);
3. directories: ``/etc/mimamori`` (settings, broker configuration),
   ``/var/lib/mimamori`` (broker state, reports, log archives),
   ``/var/log/mimamori``, ``/var/backups/mimamori``;
4. secrets: generated once, kept in the environment files on every rerun;
5. PostgreSQL: the role and its database, then the schema migrations;
6. InfluxDB (``--timeseries influx``): the database and the service's
   account with read and write on it only;
7. the broker: TLS files from the operator's CA, ``mosquitto.conf`` with a
   terminal listener (TLS, 8883) and a service listener (TLS, 8884) apart
   from Debian's own mosquitto (1883, ``/var/lib/mosquitto``), the service
   accounts' password file and the seed of the terminal accounts;
8. ``/etc/mimamori/env`` (every process), ``/etc/mimamori/brokersync.env``
   (the reconciler's secrets, root only), ``/etc/mimamori/ops.toml`` (only
   when missing: it holds prices and the issuer, edited by hand);
9. systemd units for every process, then ``systemctl daemon-reload``.

With ``root`` other than ``/`` every path lies under it and nothing
system-wide is touched (no users created, no systemctl): a test installs
into a scratch directory and starts the processes from the units.
"""

from __future__ import annotations

import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from cloud import db
from cloud.admin import envfile, postgres, tls, units
from cloud.admin import influx as influx_admin
from cloud.admin.errors import AdminError
from cloud.admin.system import Root, ensure_dir, ensure_user, group_of, require_tool, run
from cloud.admin.system import write_file as write
from cloud.broker import (
    BrokerSettings,
    Listener,
    ListenerKind,
    TlsFiles,
    account_from_row,
    render_directory,
)
from cloud.broker.dynsec import ADMIN_USERNAME
from cloud.broker.sealing import generate_keypair
from cloud.broker.settings import find_dynsec_plugin
from cloud.errors import CloudError
from cloud.timeseries.influx_wire import InfluxClient

ETC = "/etc/mimamori"
STATE = "/var/lib/mimamori"
LOGS = "/var/log/mimamori"
BACKUPS = "/var/backups/mimamori"
UNITS = "/etc/systemd/system"
# Generated once, then kept (the last one lives in brokersync.env).
SECRETS = (
    "MIMAMORI_SECRET_KEY",
    "MIMAMORI_MQTT_PASSWORD",
    "MIMAMORI_INGEST_MQTT_PASSWORD",
    "MIMAMORI_MONITOR_MQTT_PASSWORD",
    "MIMAMORI_BROKER_ADMIN_PASSWORD",
)
INFLUX_PASSWORD = "MIMAMORI_INFLUX_PASSWORD"  # noqa: S105 (a name)


@dataclass(frozen=True)
class Options:
    """What the operator chose; defaults are the documented production ones."""

    site_url: str
    broker_name: str
    mail_from: str
    tls_ca: Path
    tls_ca_key: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    root: Path = Path("/")
    app_dir: Path = field(default_factory=Path.cwd)
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    user: str = "mimamori"
    broker_user: str = "mosquitto"
    # Where the cloud's processes reach the broker's service listener; the
    # certificate must name it (the issued one names it and localhost).
    mqtt_host: str = "localhost"
    terminal_port: int = 8883
    service_port: int = 8884
    service_bind: str = "127.0.0.1"
    web_bind: str = "127.0.0.1:8000"
    web_workers: int = 4
    ingest_workers: int = 2
    db_host: str = "localhost"
    db_port: int = 5432
    db_name: str = "mimamori"
    db_user: str = "mimamori"
    pg_admin: str = ""  # psql connection string of a superuser; "": local, as postgres
    timeseries: str = "influx"
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "mimamori"
    influx_user: str = "mimamori"
    influx_admin_user: str = "admin"
    influx_admin_password: str = field(default="", repr=False)
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: str = "none"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    trusted_proxies: int = 1
    systemctl: bool = True

    def __post_init__(self) -> None:
        parts = urlsplit(self.site_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminError(f"--site-url {self.site_url!r}: expected https://host[/path]")
        if self.timeseries not in ("influx", "sql"):
            raise AdminError(f"--timeseries {self.timeseries!r}: influx or sql")
        if self.smtp_security not in ("none", "starttls", "ssl"):
            raise AdminError(f"--smtp-security {self.smtp_security!r}: none, starttls or ssl")
        if self.ingest_workers < 1 or self.web_workers < 1:
            raise AdminError("--ingest-workers and --web-workers must be at least 1")
        if 1883 in (self.terminal_port, self.service_port):
            raise AdminError("port 1883 is Debian's own mosquitto's; choose another")


@dataclass
class Report:
    """What an install did, one line per step, for the operator to read."""

    lines: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        self.say(text)


def install(o: Options, say: Callable[[str], None] = print) -> Report:
    """Run every step (module docstring). Raises :class:`AdminError` naming
    what to fix; whatever was done before the failing step stays and is
    kept by the next run."""
    report = Report(say=say)
    root = Root(o.root)
    paths = _Paths(root)
    tools = _check_tools(o)
    report(
        "users: "
        + ", ".join(f"{u} {ensure_user(u, root)}" for u in dict.fromkeys((o.user, o.broker_user)))
    )
    group, broker_group = group_of(o.user), group_of(o.broker_user)
    for path, mode, owner, grp in (
        (paths.etc, 0o750, "root", group),
        (paths.broker_conf, 0o750, "root", broker_group),
        (paths.state, 0o755, "root", None),
        (paths.broker_state, 0o750, o.broker_user, None),
        (paths.reports, 0o750, o.user, None),
        (paths.archive, 0o750, o.user, None),
        (paths.logs, 0o750, o.user, None),
        (paths.backups, 0o750, o.user, None),
    ):
        report(f"directory {path}: {ensure_dir(path, mode, owner, grp)}")

    old_env = envfile.read(paths.env)
    old_sync = envfile.read(paths.brokersync_env)
    kept = {**old_env, **old_sync}
    secret = {name: kept.get(name) or secrets.token_urlsafe(32) for name in SECRETS}
    db_password = _kept_db_password(old_env) or secrets.token_urlsafe(24)
    seal_public, seal_private = (
        (old_env["MIMAMORI_BROKER_SEAL_KEY"], old_sync["MIMAMORI_BROKER_SEAL_PRIVATE_KEY"])
        if old_env.get("MIMAMORI_BROKER_SEAL_KEY")
        and old_sync.get("MIMAMORI_BROKER_SEAL_PRIVATE_KEY")
        else generate_keypair()
    )
    reused = sum(1 for name in SECRETS if kept.get(name))
    report(f"secrets: {reused} kept, {len(SECRETS) - reused} generated")

    database_url = (
        f"postgresql+psycopg://{o.db_user}:{quote(db_password, safe='')}"
        f"@{o.db_host}:{o.db_port}/{o.db_name}"
    )
    # The drill database: `python -m cloud.ops restore --database <name>_drill`.
    databases = [o.db_name, f"{o.db_name}_drill"]
    for line in postgres.provision(o.db_user, databases, db_password, o.pg_admin):
        report(f"postgresql: {line}")
    try:
        db.upgrade(database_url)
    except CloudError as err:
        raise AdminError(f"migrating {o.db_name}: {err}") from err
    engine = db.make_engine(database_url)
    try:
        report(f"postgresql: schema of {o.db_name} at revision {db.current_revision(engine)}")
    finally:
        engine.dispose()

    influx_password = old_env.get(INFLUX_PASSWORD) or secrets.token_urlsafe(24)
    if o.timeseries == "influx":
        report(_influx(o, influx_password))

    names = list(dict.fromkeys([o.broker_name, o.mqtt_host, "localhost", "127.0.0.1"]))
    tls_files, done = tls.install(
        paths.broker_conf,
        ca=o.tls_ca,
        names=names,
        group=broker_group,
        ca_key=o.tls_ca_key,
        cert=o.tls_cert,
        key=o.tls_key,
    )
    report(f"broker TLS: {done} ({', '.join(names)})")
    rendered = render_directory(
        paths.broker_conf,
        [
            account_from_row("web", secret["MIMAMORI_MQTT_PASSWORD"], "web"),
            account_from_row("ingest", secret["MIMAMORI_INGEST_MQTT_PASSWORD"], "ingest"),
            account_from_row("monitor", secret["MIMAMORI_MONITOR_MQTT_PASSWORD"], "monitor"),
            account_from_row(ADMIN_USERNAME, secret["MIMAMORI_BROKER_ADMIN_PASSWORD"], "admin"),
        ],
        BrokerSettings(
            listeners=(
                Listener(ListenerKind.TERMINAL, o.terminal_port, "0.0.0.0", tls=True),  # noqa: S104
                Listener(ListenerKind.SERVICE, o.service_port, o.service_bind, tls=True),
            ),
            data_dir=paths.broker_state,
            tls=TlsFiles(tls_files.ca, tls_files.cert, tls_files.key),
            user=o.broker_user,
        ),
    )
    for secret_file in (rendered.service_passwd, rendered.dynsec):
        shutil.chown(secret_file, group=broker_group)
    shutil.chown(rendered.dynsec, user=o.broker_user)
    report(
        f"broker: {rendered.conf} (terminals TLS {o.terminal_port}, services TLS "
        f"{o.service_bind}:{o.service_port}), state in {paths.broker_state}"
    )

    env = _environment(
        o,
        paths,
        secret=secret,
        database_url=database_url,
        influx_password=influx_password,
        seal_public=seal_public,
        tls_files=tls_files,
    )
    report(f"{paths.env}: {write(paths.env, envfile.render(env, old_env), 0o640, 'root', group)}")
    sync = {
        "MIMAMORI_BROKER_ADMIN_PASSWORD": secret["MIMAMORI_BROKER_ADMIN_PASSWORD"],
        "MIMAMORI_BROKER_SEAL_PRIVATE_KEY": seal_private,
    }
    text = envfile.render(sync, old_sync)
    report(f"{paths.brokersync_env}: {write(paths.brokersync_env, text, 0o600)}")
    if paths.ops.exists():
        report(f"{paths.ops}: kept (prices, issuer: edit it by hand)")
    else:
        report(f"{paths.ops}: {write(paths.ops, _ops_toml(o, paths, tls_files), 0o644)}")

    values = _unit_values(o, paths, tools, group, broker_group)
    for name, template in units.templates(o.app_dir / "deploy" / "systemd").items():
        text = units.render(template, values, name)
        report(f"unit {paths.units / name}: {write(paths.units / name, text, 0o644)}")
    if o.systemctl and root.is_host:
        run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
        report("systemctl daemon-reload: done")
    ingest = " ".join(f"mimamori-ingest@{n}" for n in range(1, o.ingest_workers + 1))
    report(
        "next: systemctl enable --now mimamori-broker mimamori-brokersync mimamori-web "
        f"{ingest} mimamori-notify mimamori-scheduler"
    )
    return report


@dataclass(frozen=True)
class _Paths:
    root: Root

    @property
    def etc(self) -> Path:
        return self.root(ETC)

    @property
    def env(self) -> Path:
        return self.etc / "env"

    @property
    def brokersync_env(self) -> Path:
        return self.etc / "brokersync.env"

    @property
    def ops(self) -> Path:
        return self.etc / "ops.toml"

    @property
    def broker_conf(self) -> Path:
        return self.etc / "broker"

    @property
    def state(self) -> Path:
        return self.root(STATE)

    @property
    def broker_state(self) -> Path:
        return self.state / "broker"

    @property
    def reports(self) -> Path:
        return self.state / "reports"

    @property
    def archive(self) -> Path:
        return self.state / "archive"

    @property
    def logs(self) -> Path:
        return self.root(LOGS)

    @property
    def backups(self) -> Path:
        return self.root(BACKUPS)

    @property
    def units(self) -> Path:
        path = self.root(UNITS)
        path.mkdir(parents=True, exist_ok=True)
        return path


def _check_tools(o: Options) -> dict[str, str]:
    tools = {
        "mosquitto": require_tool("mosquitto", "mosquitto"),
        "psql": require_tool("psql", "postgresql-client"),
        "openssl": require_tool("openssl", "openssl"),
    }
    find_dynsec_plugin()  # raises naming the package
    if not (o.app_dir / "deploy" / "systemd").is_dir():
        raise AdminError(f"--app-dir {o.app_dir}: no deploy/systemd (run from the checkout)")
    if not (o.app_dir / "node_modules" / "uplot" / "dist").is_dir():
        raise AdminError(f"uPlot missing in {o.app_dir}/node_modules: run `npm ci` there first")
    for tool in ("python", "gunicorn"):
        if not (o.venv / "bin" / tool).exists():
            raise AdminError(
                f"{o.venv}/bin/{tool} missing: install with `{o.venv}/bin/pip install '.[prod]'`"
            )
    return tools


def _kept_db_password(env: dict[str, str]) -> str:
    url = env.get("MIMAMORI_DATABASE_URL", "")
    return urlsplit(url.replace("+psycopg", "")).password or "" if url else ""


def _influx(o: Options, password: str) -> str:
    if not o.influx_admin_password:
        raise AdminError(
            "InfluxDB: give the admin account's password in $MIMAMORI_INFLUX_ADMIN_PASSWORD "
            "(the install creates the database and the service's account with it)"
        )
    admin = InfluxClient(o.influx_url, o.influx_admin_user, o.influx_admin_password)
    anonymous = InfluxClient(o.influx_url)
    try:
        made_db, made_user = influx_admin.provision(
            admin, o.influx_database, o.influx_user, password
        )
        # The drill's database, for restores that must not touch production's.
        influx_admin.provision(admin, f"{o.influx_database}_drill", o.influx_user, password)
        open_to_all = True
        try:
            anonymous.query("", ["SHOW DATABASES"])
        except CloudError:
            open_to_all = False
    finally:
        admin.close()
        anonymous.close()
    text = (
        f"influxdb: database {o.influx_database} {'created' if made_db else 'kept'}, "
        f"account {o.influx_user} {'created' if made_user else 'kept'} (read and write there "
        f"and in {o.influx_database}_drill only)"
    )
    if open_to_all:
        text += (
            "\nWARNING: this InfluxDB answers without an account (auth-enabled = false): "
            "set auth-enabled = true in /etc/influxdb/influxdb.conf, or the account limits nothing"
        )
    return text


def _environment(
    o: Options,
    paths: _Paths,
    *,
    secret: dict[str, str],
    database_url: str,
    influx_password: str,
    seal_public: str,
    tls_files: tls.TlsFiles,
) -> dict[str, str]:
    """Every variable the processes read, in the order docs/deployment.md lists them."""
    site = urlsplit(o.site_url)
    env = {
        "MIMAMORI_DATABASE_URL": database_url,
        "MIMAMORI_TIMESERIES_BACKEND": o.timeseries,
    }
    if o.timeseries == "influx":
        env |= {
            "MIMAMORI_INFLUX_URL": o.influx_url,
            "MIMAMORI_INFLUX_DATABASE": o.influx_database,
            "MIMAMORI_INFLUX_USERNAME": o.influx_user,
            INFLUX_PASSWORD: influx_password,
        }
    env |= {
        "MIMAMORI_OPS_FILE": str(paths.ops),
        "MIMAMORI_SECRET_KEY": secret["MIMAMORI_SECRET_KEY"],
        "MIMAMORI_SITE_URL": o.site_url.rstrip("/"),
        "MIMAMORI_COOKIE_SECURE": "1" if site.scheme == "https" else "0",
        "MIMAMORI_TRUSTED_PROXIES": str(o.trusted_proxies),
        "MIMAMORI_UPLOT_DIR": str(o.app_dir / "node_modules" / "uplot" / "dist"),
        "MIMAMORI_MQTT_HOST": o.mqtt_host,
        "MIMAMORI_MQTT_PORT": str(o.service_port),
        "MIMAMORI_MQTT_TLS_CA": str(tls_files.ca),
        "MIMAMORI_MQTT_USERNAME": "web",
        "MIMAMORI_MQTT_PASSWORD": secret["MIMAMORI_MQTT_PASSWORD"],
        "MIMAMORI_INGEST_MQTT_PASSWORD": secret["MIMAMORI_INGEST_MQTT_PASSWORD"],
        "MIMAMORI_MONITOR_MQTT_PASSWORD": secret["MIMAMORI_MONITOR_MQTT_PASSWORD"],
        "MIMAMORI_BROKER_PUBLIC_HOST": o.broker_name,
        "MIMAMORI_BROKER_PUBLIC_PORT": str(o.terminal_port),
        "MIMAMORI_BROKER_PUBLIC_TLS": "1",
        "MIMAMORI_BROKER_SEAL_KEY": seal_public,
        "MIMAMORI_SMTP_HOST": o.smtp_host,
        "MIMAMORI_SMTP_PORT": str(o.smtp_port),
        "MIMAMORI_SMTP_SECURITY": o.smtp_security,
        "MIMAMORI_MAIL_FROM": o.mail_from,
        "MIMAMORI_MESSAGE_ID_DOMAIN": site.hostname or "",
    }
    if o.smtp_user:
        env |= {"MIMAMORI_SMTP_USER": o.smtp_user, "MIMAMORI_SMTP_PASSWORD": o.smtp_password}
    return env


def _ops_toml(o: Options, paths: _Paths, tls_files: tls.TlsFiles) -> str:
    web_port = o.web_bind.rpartition(":")[2]
    return f"""\
# Operations settings (docs/operations.md lists every key). Written once by
# `mimamori-admin install`; edit prices and the issuer here.
backup_dir = "{paths.backups}"
log_dir = "{paths.logs}"
archive_dir = "{paths.archive}"
reports_dir = "{paths.reports}"
web_health_url = "http://127.0.0.1:{web_port}/healthz"
broker_host = "{o.mqtt_host}"
broker_port = {o.service_port}
broker_tls = true
broker_ca_file = "{tls_files.ca}"
# issuer_name = "..."                  # shown on invoices
# issuer_registration_number = "T..."  # qualified-invoice registration number
"""


def _unit_values(
    o: Options, paths: _Paths, tools: dict[str, str], group: str, broker_group: str
) -> dict[str, str]:
    return {
        "APP": str(o.app_dir.resolve()),
        "VENV": str(o.venv),
        "ETC": str(paths.etc),
        "LOG_DIR": str(paths.logs),
        "USER": o.user,
        "GROUP": group,
        "BROKER_USER": o.broker_user,
        "BROKER_GROUP": broker_group,
        "MOSQUITTO": tools["mosquitto"],
        "MQTT_HOST": o.mqtt_host,
        "TERMINAL_PORT": str(o.terminal_port),
        "SERVICE_PORT": str(o.service_port),
        "WEB_BIND": o.web_bind,
        "WEB_WORKERS": str(o.web_workers),
    }
