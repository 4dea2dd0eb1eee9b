"""``python -m cloud.brokersync``: keep the broker's terminal accounts in step
with the terminal table, until SIGTERM/SIGINT.

    python -m cloud.brokersync run --host broker.internal --port 8883 --tls-ca ca.pem
    python -m cloud.brokersync once ...     # one full pass, then exit (install, checks)
    python -m cloud.brokersync keygen       # a sealing key pair for a new site

The database comes from :class:`cloud.config.Settings` (instance file and
``MIMAMORI_*`` variables). The broker's admin password is read from
``$MIMAMORI_BROKER_ADMIN_PASSWORD`` or ``--admin-password-file``, the
private sealing key from ``$MIMAMORI_BROKER_SEAL_PRIVATE_KEY`` or
``--key-file``; never from the command line (other users see it). Run one
reconciler per broker: the admin account has one session (the terminal
listener pins the client id), a second reconciler would take it over.

Exit status: 0 after a clean stop (``once``: every account in step), 1 if
the database is not migrated or ``once`` could not reach the broker or left
accounts out of step, 2 for bad options.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import sqlalchemy as sa

from cloud import config, db
from cloud.broker.control import ControlError, DynsecControl
from cloud.broker.sealing import generate_keypair
from cloud.brokersync.reconciler import Reconciler, ReconcilerOptions
from cloud.config import Settings
from cloud.errors import CloudError, ConfigError

ADMIN_PASSWORD_ENV = "MIMAMORI_BROKER_ADMIN_PASSWORD"  # noqa: S105
PRIVATE_KEY_ENV = "MIMAMORI_BROKER_SEAL_PRIVATE_KEY"
log = logging.getLogger("cloud.brokersync")


def parser() -> argparse.ArgumentParser:
    o = ReconcilerOptions()
    p = argparse.ArgumentParser(
        prog="python -m cloud.brokersync",
        description="Make the broker's terminal accounts (Mosquitto dynamic-security "
        "plugin) match the terminal table: at start, on every change, and fully "
        "every few minutes.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="print a new sealing key pair (public for the web, private here)")
    for name, text in (("run", "reconcile until stopped"), ("once", "one full pass, then exit")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--host", default="127.0.0.1", help="broker host (default %(default)s)")
        s.add_argument(
            "--port", type=int, default=8883, help="terminal listener port (default %(default)s)"
        )
        s.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS")
        s.add_argument(
            "--admin-password-file",
            type=Path,
            help=f"file holding the admin password (default: ${ADMIN_PASSWORD_ENV})",
        )
        s.add_argument(
            "--key-file",
            type=Path,
            help=f"file holding the private sealing key (default: ${PRIVATE_KEY_ENV})",
        )
        s.add_argument(
            "--poll",
            type=float,
            default=o.poll_s,
            help="seconds between polls (default %(default)s)",
        )
        s.add_argument(
            "--full-every",
            type=float,
            default=o.full_s,
            help="seconds between full comparisons with the broker (default %(default)s)",
        )
        s.add_argument("--log-level", default="INFO", help="default %(default)s")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "keygen":
        public, private = generate_keypair()
        print(f"MIMAMORI_BROKER_SEAL_PUBLIC_KEY={public}")
        print(f"{PRIVATE_KEY_ENV}={private}")
        return 0
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings.load()
        password = config.secret(
            args.admin_password_file, ADMIN_PASSWORD_ENV, "--admin-password-file"
        )
        private_key = config.secret(args.key_file, PRIVATE_KEY_ENV, "--key-file")
        options = ReconcilerOptions(poll_s=args.poll, full_s=args.full_every)
    except (ConfigError, ValueError) as err:
        log.error("%s", err)
        return 2
    engine = db.make_engine(settings.database_url, echo=settings.sql_echo)
    try:
        db.require_current(engine)
    except (CloudError, sa.exc.SQLAlchemyError) as err:
        log.error("database not ready: %s", err)
        return 1
    reconciler = Reconciler(
        db.session_factory(engine),
        functools.partial(DynsecControl, args.host, args.port, password, tls_ca=args.tls_ca),
        private_key,
        options,
    )
    try:
        if args.command == "once":
            try:
                counts = reconciler.sync_once(full=True)
            except ControlError as err:
                log.error("%s", err)
                return 1
            print(f"broker accounts: {counts}")
            return 1 if counts.failed or counts.unsealable else 0

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            reconciler.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("broker account sync on %s:%d every %.1f s", args.host, args.port, args.poll)
        reconciler.run()
    finally:
        reconciler.close()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
