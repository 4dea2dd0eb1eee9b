"""``mimamori-admin``: install a production site, create its first operator.

    mimamori-admin install --site-url https://monitor.example.com \\
        --broker-name mqtt.example.com --mail-from mimamori@example.com \\
        --tls-ca ~/ca/ca.pem --tls-ca-key ~/ca/ca.key
    mimamori-admin create-operator ops@example.com [--invite]

Secrets never go on the command line (``ps`` shows it to every user): the
InfluxDB admin's and the SMTP password come from the environment
(``MIMAMORI_INFLUX_ADMIN_PASSWORD``, ``MIMAMORI_SMTP_PASSWORD``) or a prompt,
an operator's password from a prompt (or one line on stdin).
Exit status: 0 done, 1 a step failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cloud.admin import envfile
from cloud.admin.errors import AdminError
from cloud.admin.install import ETC, Options, install
from cloud.errors import CloudError

DEFAULT_ENV_FILE = f"{ETC}/env"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori-admin",
        description="Install mimamori on this machine and manage it (docs/deployment.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser(
        "install",
        help="users, directories, databases, broker, environment file, systemd units "
        "(idempotent: rerun after an upgrade or to change an option)",
    )
    d = Options.__dataclass_fields__
    site = i.add_argument_group("site")
    site.add_argument("--site-url", required=True, help="public URL of the web site (https://…)")
    site.add_argument(
        "--broker-name", required=True, help="host name terminals connect to (in the certificate)"
    )
    site.add_argument("--mail-from", required=True, help="sender address of the service's mail")
    site.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="install under this directory "
        "instead of / (tests; creates no users, runs no systemctl)",
    )
    site.add_argument(
        "--app-dir",
        type=Path,
        default=Path.cwd(),
        help="the checkout, with deploy/ and node_modules/ (default: here)",
    )
    site.add_argument(
        "--user", default=d["user"].default, help="service account (default %(default)s)"
    )
    site.add_argument(
        "--broker-user",
        default=d["broker_user"].default,
        help="the broker's account (default %(default)s)",
    )
    site.add_argument(
        "--web-bind",
        default=d["web_bind"].default,
        help="gunicorn's address, behind the reverse proxy (default %(default)s)",
    )
    site.add_argument("--web-workers", type=int, default=d["web_workers"].default)
    site.add_argument("--ingest-workers", type=int, default=d["ingest_workers"].default)
    site.add_argument(
        "--trusted-proxies",
        type=int,
        default=d["trusted_proxies"].default,
        help="reverse proxies in front of the site (default %(default)s)",
    )
    site.add_argument("--no-systemctl", action="store_true", help="skip systemctl daemon-reload")
    b = i.add_argument_group("broker")
    b.add_argument("--tls-ca", type=Path, required=True, help="CA certificate terminals trust")
    b.add_argument("--tls-ca-key", type=Path, help="its key: the install issues the certificate")
    b.add_argument("--tls-cert", type=Path, help="or a server certificate made elsewhere …")
    b.add_argument("--tls-key", type=Path, help="… and its key")
    b.add_argument("--terminal-port", type=int, default=d["terminal_port"].default)
    b.add_argument("--service-port", type=int, default=d["service_port"].default)
    b.add_argument(
        "--service-bind",
        default=d["service_bind"].default,
        help="address of the services' listener (default %(default)s)",
    )
    b.add_argument(
        "--mqtt-host",
        default=d["mqtt_host"].default,
        help="host the cloud's processes connect to (default %(default)s)",
    )
    g = i.add_argument_group("databases")
    g.add_argument("--db-host", default=d["db_host"].default)
    g.add_argument("--db-port", type=int, default=d["db_port"].default)
    g.add_argument("--db-name", default=d["db_name"].default)
    g.add_argument("--db-user", default=d["db_user"].default)
    g.add_argument(
        "--pg-admin",
        default="",
        help="psql connection string of a superuser "
        "(default: the local cluster, as the postgres system user)",
    )
    g.add_argument("--timeseries", choices=("influx", "sql"), default=d["timeseries"].default)
    g.add_argument("--influx-url", default=d["influx_url"].default)
    g.add_argument("--influx-database", default=d["influx_database"].default)
    g.add_argument(
        "--influx-user",
        default=d["influx_user"].default,
        help="the service's InfluxDB account (default %(default)s)",
    )
    g.add_argument(
        "--influx-admin-user",
        default=d["influx_admin_user"].default,
        help="an InfluxDB admin; password in $MIMAMORI_INFLUX_ADMIN_PASSWORD",
    )
    m = i.add_argument_group("mail")
    m.add_argument("--smtp-host", default=d["smtp_host"].default)
    m.add_argument("--smtp-port", type=int, default=d["smtp_port"].default)
    m.add_argument("--smtp-security", choices=("none", "starttls", "ssl"), default="none")
    m.add_argument("--smtp-user", default="", help="password in $MIMAMORI_SMTP_PASSWORD")

    o = sub.add_parser("create-operator", help="create an operator account")
    o.add_argument("email")
    o.add_argument("--name", default="")
    o.add_argument("--language", choices=("ja", "en"), default="ja")
    o.add_argument(
        "--invite",
        action="store_true",
        help="mail an invitation to choose the password instead of asking for it",
    )
    o.add_argument(
        "--env-file",
        type=Path,
        default=Path(DEFAULT_ENV_FILE),
        help="the site's environment file (default %(default)s)",
    )
    return p


def _secret(variable: str, prompt: str) -> str:
    value = os.environ.get(variable, "")
    if not value and sys.stdin.isatty():
        value = getpass.getpass(prompt)
    return value


def _install(args: argparse.Namespace) -> int:
    chosen = {f.name for f in dataclasses.fields(Options)} & set(vars(args))
    values = {name: getattr(args, name) for name in chosen}
    if args.timeseries == "influx":
        values["influx_admin_password"] = _secret(
            "MIMAMORI_INFLUX_ADMIN_PASSWORD", f"InfluxDB password of {args.influx_admin_user}: "
        )
    if args.smtp_user:
        values["smtp_password"] = _secret(
            "MIMAMORI_SMTP_PASSWORD", f"SMTP password of {args.smtp_user}: "
        )
    values |= {"app_dir": args.app_dir.resolve(), "systemctl": not args.no_systemctl}
    install(Options(**values))
    return 0


def _create_operator(args: argparse.Namespace) -> int:
    # The same settings the site's processes read; variables already set win.
    if not args.env_file.is_file():
        raise AdminError(f"--env-file {args.env_file} does not exist (run install first)")
    for key, value in envfile.read(args.env_file).items():
        os.environ.setdefault(key, value)
    password = None
    if not args.invite:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {args.email}: ")
            if getpass.getpass("again: ") != password:
                raise AdminError("the two passwords differ")
        else:
            password = sys.stdin.readline().rstrip("\r\n")
    from cloud.admin.operators import create_operator  # noqa: PLC0415 (builds the web app)

    create_operator(args.email, name=args.name, language=args.language, password=password)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "install":
            return _install(args)
        return _create_operator(args)
    except (CloudError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
