"""``python -m cloud.broker``: render the broker's config directory, hash passwords.

Exit status: 0 done, 2 bad input (message on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from cloud.broker.accounts import Account, accounts_from_rows
from cloud.broker.errors import BrokerConfigError
from cloud.broker.passwd import DEFAULT_ITERATIONS, hash_password
from cloud.broker.render import RenderedConfig, render_directory
from cloud.broker.settings import BrokerSettings, Listener, TlsFiles

DEFAULT_LISTENERS = ("terminal:0.0.0.0:8883:tls", "service:127.0.0.1:8884:tls")

EPILOG = """\
accounts file: CSV lines "username,secret,role"; role is admin, ingest,
web, monitor or terminal; secret is a plaintext password or a mosquitto
$7$/$6$ hash ($7$ only for admin and terminals); blank lines and lines
starting with # are ignored. The admin account (named mimamori.admin) and
terminals seed the dynamic-security plugin's file when it does not exist
yet; from then on the broker owns it and the cloud's reconciler
(python -m cloud.brokersync) keeps the terminal accounts in step with the
terminal table.

example:
  python -m cloud.broker render --out /etc/mimamori/broker --data-dir /var/lib/mimamori/broker \\
      --accounts accounts.csv --tls-ca ca.pem --tls-cert server.pem --tls-key server.key
  mosquitto -c /etc/mimamori/broker/mosquitto.conf
after changing service accounts, render again and send the broker SIGHUP.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cloud.broker",
        description="Mosquitto configuration for mimamori: per-terminal credentials, "
        "ACL, TLS, limits and persistence.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser(
        "render",
        help="write mosquitto.conf, password files and ACL files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    render.add_argument("--out", type=Path, required=True, help="config directory to write")
    render.add_argument(
        "--accounts", required=True, help="accounts CSV file (username,secret,role); - reads stdin"
    )
    render.add_argument(
        "--listener",
        action="append",
        metavar="KIND:BIND:PORT[:tls]",
        help=f"kind is terminal or service; repeatable (default: {' '.join(DEFAULT_LISTENERS)})",
    )
    render.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/var/lib/mimamori/broker"),
        help="persistence directory (default: %(default)s)",
    )
    render.add_argument("--tls-ca", type=Path, help="CA certificate (PEM) clients trust")
    render.add_argument("--tls-cert", type=Path, help="server certificate (PEM)")
    render.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    render.add_argument("--log-file", type=Path, help="log file (default: stdout)")
    render.add_argument("--pid-file", type=Path, help="pid file (default: none)")
    render.add_argument(
        "--user", default="mosquitto", help="account mosquitto drops root to (default: %(default)s)"
    )
    render.add_argument(
        "--group", help="give the password files to this group (the broker's, so it can read them)"
    )
    render.add_argument(
        "--reseed",
        action="store_true",
        help="rewrite the plugin's file even if it exists (broker stopped)",
    )
    render.add_argument(
        "--dynsec-plugin", type=Path, help="path of mosquitto_dynamic_security.so (default: found)"
    )
    render.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        help="PBKDF2 iterations for plaintext secrets (default: %(default)s)",
    )

    hasher = sub.add_parser("hash", help="print the $7$ hash of a password read from stdin")
    hasher.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "hash":
            return _hash(args)
        return _render(args)
    except (BrokerConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def read_accounts(text: str, iterations: int = DEFAULT_ITERATIONS) -> list[Account]:
    """Accounts from CSV text; BrokerConfigError names the bad line."""
    rows = []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) != 3:
            raise BrokerConfigError(f"accounts line {lineno}: expected username,secret,role")
        rows.append((row[0].strip(), row[1], row[2].strip()))
    return accounts_from_rows(rows, iterations)


def _render(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.accounts == "-" else Path(args.accounts).read_text("utf-8")
    accounts = read_accounts(text, args.iterations)
    tls_args = (args.tls_ca, args.tls_cert, args.tls_key)
    if any(tls_args) and not all(tls_args):
        raise BrokerConfigError("--tls-ca, --tls-cert and --tls-key go together")
    settings = BrokerSettings(
        listeners=tuple(Listener.parse(s) for s in (args.listener or DEFAULT_LISTENERS)),
        data_dir=args.data_dir,
        tls=TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if all(tls_args) else None,
        log_file=args.log_file,
        user=args.user,
        pid_file=args.pid_file,
        dynsec_plugin=args.dynsec_plugin,
    )
    files = render_directory(args.out, accounts, settings, reseed=args.reseed)
    if args.group:
        _give_group(files, args.group)
    print(f"wrote {files.conf} ({len(accounts)} accounts)")
    return 0


def _give_group(files: RenderedConfig, group: str) -> None:
    for path in (files.service_passwd, files.dynsec):
        try:
            shutil.chown(path, group=group)
        except LookupError as err:
            raise BrokerConfigError(f"unknown group {group!r}") from err


def _hash(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    print(hash_password(password, args.iterations))
    return 0
