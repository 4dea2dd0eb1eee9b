"""``python -m cloud.notify``: the delivery worker and its operator commands.

    python -m cloud.notify run [--once] [--interval S] [--batch N]
    python -m cloud.notify dead [--customer ID] [--limit N]
    python -m cloud.notify requeue ID [ID ...]

The database URL comes from ``--database-url`` or the cloud settings
(``MIMAMORI_DATABASE_URL`` / the instance file); SMTP settings from
``MIMAMORI_SMTP_*`` variables or the options below. The SMTP password is
read from ``MIMAMORI_SMTP_PASSWORD`` only. Several workers may run at once.
Exit status: 0 ok, 2 bad arguments or configuration, 1 other errors.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from sqlalchemy.orm import Session

from cloud import db
from cloud.config import Settings
from cloud.errors import CloudError, ConfigError
from cloud.models import utcnow
from cloud.notify import outbox, wake
from cloud.notify.settings import NotifySettings, RetryPolicy
from cloud.timeseries import TimeSeriesStore, make_store

log = logging.getLogger("cloud.notify")
# Writers wake the worker when they add rows (cloud.notify.wake) and the
# worker sleeps until the next retry is due; this interval only bounds the
# delay should a wake-up be lost. An idle pass costs one read on the due
# index (outbox.any_due), no write lock.
DEFAULT_INTERVAL_S = 5.0
# On SIGTERM: how long sends in progress may take to finish.
STOP_GRACE_S = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cloud.notify",
        description="Deliver queued notifications (SMTP e-mail, webhooks, chat) and "
        "forwarded data (SenML webhooks, CSV files by SFTP) from the ledger.",
    )
    p.add_argument("--database-url", help="default: the cloud settings' database_url")
    p.add_argument("-v", "--verbose", action="store_true", help="log every delivery")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="send due notifications (loop, or --once)")
    run.add_argument("--once", action="store_true", help="one batch, then exit")
    run.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help="longest sleep without a wake-up (default %(default)s): writers wake the "
        "worker when they add rows, so this only matters if a wake-up is lost",
    )
    run.add_argument(
        "--batch", type=int, default=outbox.DEFAULT_BATCH, help="rows claimed per batch"
    )
    run.add_argument("--smtp-host")
    run.add_argument("--smtp-port", type=int)
    run.add_argument("--smtp-user")
    run.add_argument("--smtp-security", choices=("none", "starttls", "ssl"))
    run.add_argument("--mail-from")
    run.add_argument("--site-url", help="web site base URL for links in mail")
    run.add_argument(
        "--max-attempts",
        type=int,
        default=RetryPolicy.max_attempts,
        help="attempts before a row is dead (default %(default)s)",
    )
    run.add_argument(
        "--retry-base",
        type=float,
        default=RetryPolicy.base_s,
        help="first retry delay in seconds, doubled each time (default %(default)s)",
    )

    dead = sub.add_parser("dead", help="list dead (undeliverable) notifications")
    dead.add_argument("--customer", type=int)
    dead.add_argument("--limit", type=int, default=50)

    requeue = sub.add_parser("requeue", help="retry dead notifications with a fresh budget")
    requeue.add_argument("ids", type=int, nargs="+")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        cloud_settings = Settings.load()
        url = args.database_url or cloud_settings.database_url
        engine = db.make_engine(url)
        db.require_current(engine)
        with db.session_factory(engine)() as session:
            if args.command == "dead":
                return _dead(session, args)
            if args.command == "requeue":
                return _requeue(session, args)
            return _run(session, args, make_store(cloud_settings, engine))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CloudError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _run(session: Session, args: argparse.Namespace, store: TimeSeriesStore) -> int:
    settings = NotifySettings.from_env(
        smtp_host=args.smtp_host,
        smtp_port=args.smtp_port,
        smtp_user=args.smtp_user,
        smtp_security=args.smtp_security,
        mail_from=args.mail_from,
        site_url=args.site_url,
    )
    policy = RetryPolicy(
        base_s=args.retry_base,
        max_attempts=args.max_attempts,
        max_delay_s=max(RetryPolicy.max_delay_s, args.retry_base),
    )
    stop = threading.Event()
    sessions = db.session_factory(session.get_bind())  # type: ignore[arg-type]
    worker = outbox.Worker(sessions, settings, policy, batch=args.batch, store=store)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the sends in progress", signum)
        stop.set()
        worker.kick.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # Listen before the first pass, so that no row added meanwhile goes unnoticed.
    with wake.Listener(session.get_bind(), worker.kick):  # type: ignore[arg-type]
        while not stop.is_set():
            claimed = worker.pass_once(session, utcnow())
            if args.once:
                worker.lanes.join()
                s = worker.stats
                print(
                    f"claimed {s.claimed} sent {s.sent} retried {s.retried} "
                    f"dead {s.dead} lost {s.lost}"
                )
                return 0
            if claimed < args.batch:
                worker.wait(session, args.interval)
        if not worker.close(STOP_GRACE_S):
            log.warning(
                "sends still in progress after %s s; their leases will expire", STOP_GRACE_S
            )
    return 0


def _dead(session: Session, args: argparse.Namespace) -> int:
    rows = outbox.dead_letters(session, customer_id=args.customer, limit=args.limit)
    for r in rows:
        print(
            f"{r.id}\t{r.channel}\t{r.recipient}\t{r.event}\tattempts={r.attempts}\t"
            f"{r.last_error or ''}"
        )
    return 0


def _requeue(session: Session, args: argparse.Namespace) -> int:
    missing = [i for i in args.ids if not outbox.requeue(session, i, utcnow())]
    session.commit()
    for i in missing:
        print(f"{i}: not dead, left alone", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
