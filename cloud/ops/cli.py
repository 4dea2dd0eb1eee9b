"""Operator commands: ``python -m cloud.ops COMMAND --help``.

Commands read the site's settings as its processes do: the environment file
(``--env-file /etc/mimamori/env`` or ``$MIMAMORI_ENV_FILE``), which names
the operations settings (``MIMAMORI_OPS_FILE``), or ``--instance-file`` /
``MIMAMORI_*`` variables. With none of them a command stops instead of
running on the built-in defaults: those describe no site, and an answer
about them ("no backups", "broker up") would mislead. Exit status: 0 done,
1 the operation failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloud import db
from cloud.config import DEFAULT_INSTANCE_FILE, ENV_FILE_ENV, INSTANCE_FILE_ENV, Settings
from cloud.errors import CloudError, ConfigError
from cloud.models import Customer, utcnow
from cloud.models.ops import Invoice
from cloud.ops import announcements, availability, backup, billing
from cloud.ops.context import Env, build
from cloud.ops.errors import RestoreError
from cloud.ops.health import run_checks
from cloud.ops.invoice_docs import invoice_csv, invoice_pdf
from cloud.ops.report_docs import report_csv, report_pdf
from cloud.ops.reports import customer_report
from cloud.ops.scheduler import claim, execute
from cloud.ops.settings import OpsSettings
from cloud.timeseries import InfluxStore, SqlStore, TimeSeriesStore
from cloud.timeseries.influx_wire import InfluxClient

DEFAULT_ENV_FILE = "/etc/mimamori/env"


def _month(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not YYYY-MM") from err


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from err
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. +09:00")
    return value


def _out(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(path).write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")


# -- commands ------------------------------------------------------------------


def cmd_backup(env: Env, args: argparse.Namespace) -> int:
    made = backup.make_backup(env.engine, env.store, env.ops, utcnow())
    print(made.path)
    return 0


def cmd_backups(env: Env, args: argparse.Namespace) -> int:
    found = backup.list_backups(env.ops.backup_dir)
    if not found:
        print(f"no backup in {Path(env.ops.backup_dir).resolve()} (backup_dir)", file=sys.stderr)
        return 1
    for b in found:
        rows = sum(t["rows"] for t in b.manifest.get("tables", {}).values())
        print(
            f"{b.path}  {b.manifest['dialect']}  revision {b.manifest.get('revision')}  "
            f"{rows} rows  time series: {b.manifest.get('timeseries_points')}"
        )
    return 0


def _restore_store(
    settings: Settings, args: argparse.Namespace, exported: bool, url: str
) -> tuple[TimeSeriesStore | None, Engine | None]:
    """Where the time-series export goes (None: nowhere), and an engine to dispose.

    A restore into the configured database (disaster recovery) imports into
    the configured InfluxDB; a drill into another database must name its
    own InfluxDB database too, so it can never write into production's.
    """
    drill = args.database_url is not None or args.database is not None
    if not drill and (args.influx_database or args.influx_url):
        raise RestoreError(
            "--influx-database/--influx-url need --database or --database-url "
            "(a drill names every target)"
        )
    if not exported or args.no_timeseries:
        return None, None
    if settings.timeseries_backend == "influx":
        if drill and not args.influx_database:
            raise RestoreError(
                "the backup holds time series: a restore into another database needs "
                "--influx-database (a scratch database) or --no-timeseries, or it would "
                "import into the configured InfluxDB database"
            )
        server = args.influx_url or settings.influx_url
        database = args.influx_database or settings.influx_database
        if drill and (server, database) == (settings.influx_url, settings.influx_database):
            raise RestoreError(
                f"--influx-database {database} is the configured one: "
                "a drill needs a scratch database"
            )
        client = InfluxClient(
            server, settings.influx_username, settings.influx_password, settings.influx_timeout_s
        )
        return InfluxStore(client, database), None
    if args.import_timeseries:
        engine = db.make_engine(url)
        return SqlStore(engine), engine
    return None, None


def cmd_restore(args: argparse.Namespace) -> int:
    settings = Settings.load(instance_file=args.instance_file)
    ops = OpsSettings.load(args.ops_file)
    url = args.database_url or settings.database_url
    if args.database is not None:
        if args.database_url is not None:
            raise RestoreError("--database or --database-url, not both")
        # The configured server and account, another database (the drill's).
        configured = sa.engine.make_url(settings.database_url)
        url = configured.set(database=args.database).render_as_string(hide_password=False)
    found = backup.read_backup(args.backup)
    store, engine = _restore_store(settings, args, bool(found.manifest.get("timeseries")), url)
    try:
        done = backup.restore(found.path, url, ops, store=store, force=args.force)
    finally:
        if engine is not None:
            engine.dispose()
    print(
        f"restored {done.tables} tables ({done.rows} rows) from {done.backup}; checksums match"
        + (
            f"; {done.timeseries_points} time-series points"
            if done.timeseries_points is not None
            else ""
        )
    )
    return 0


def cmd_invoice(env: Env, args: argparse.Namespace) -> int:
    with env.sessions.begin() as session:
        run = billing.generate(
            session,
            args.month,
            env.ops,
            utcnow(),
            regenerate=args.regenerate,
            customer_ids=args.customer or None,
        )
    for number in run.issued:
        print(f"issued {number}")
    for number in run.skipped:
        print(f"kept {number} (use --regenerate to replace)")
    for cid, reason in run.failed.items():
        print(f"customer {cid}: {reason}", file=sys.stderr)
    return 1 if run.failed else 0


def cmd_invoice_file(env: Env, args: argparse.Namespace) -> int:
    with env.sessions() as session:
        invoice = session.scalar(sa.select(Invoice).where(Invoice.number == args.number))
        if invoice is None:
            print(f"no invoice {args.number}", file=sys.stderr)
            return 1
        customer = session.get(Customer, invoice.customer_id)
        zone = customer.zone if customer else env.ops.tz
        data = invoice_pdf(invoice, env.ops, zone) if args.format == "pdf" else invoice_csv(invoice)
    _out(args.output, data)
    return 0


def cmd_report(env: Env, args: argparse.Namespace) -> int:
    with env.sessions() as session:
        customer = session.get(Customer, args.customer)
        if customer is None:
            print(f"no customer {args.customer}", file=sys.stderr)
            return 1
        report = customer_report(
            session,
            env.store,
            customer,
            args.month,
            now=utcnow(),
            sample_interval_s=env.ops.report_sample_interval_s,
        )
    _out(args.output, report_pdf(report, env.ops) if args.format == "pdf" else report_csv(report))
    return 0


def cmd_availability(env: Env, args: argparse.Namespace) -> int:
    month = args.month or utcnow().astimezone(env.ops.tz).date()
    with env.sessions() as session:
        figures = availability.monthly(
            session, month, list(env.ops.components), zone=env.ops.tz, now=utcnow()
        )
    if args.json:
        print(json.dumps(figures.as_dict(), indent=1))
        return 0
    for f in (*figures.components, figures.service):
        pct = "-" if f.percent is None else f"{f.percent} %"
        print(
            f"{f.component:12} {pct:>10}  up {f.up_minutes} / {f.total_minutes} min, "
            f"down {f.down_minutes}, unknown {f.unknown_minutes}"
        )
    return 0


def cmd_health(env: Env, args: argparse.Namespace) -> int:
    results = run_checks(env.checks, env.ops.check_timeout_s)
    if args.record:
        with env.sessions.begin() as session:
            availability.record(session, results, utcnow())
    for r in results:
        print(f"{r.component:12} {'up' if r.ok else 'DOWN':5} {r.latency_ms:5} ms  {r.detail}")
    return 0 if all(r.ok for r in results) else 1


def cmd_announce(env: Env, args: argparse.Namespace) -> int:
    with env.sessions.begin() as session:
        row = announcements.announce(
            session,
            title=args.title,
            body=args.body,
            starts_at=args.start,
            ends_at=args.end,
            components=args.component or (),
            customer_ids=args.customer or None,
            lead_hours=args.lead_hours,
            mute_alarms=args.mute_alarms,
        )
        print(
            f"announcement {row.id} planned{'; alarms muted during it' if args.mute_alarms else ''}"
            "; mailed "
            f"{args.lead_hours if args.lead_hours is not None else env.ops.announce_lead_hours}"
            " h before it starts"
        )
    return 0


def cmd_run_job(env: Env, args: argparse.Namespace) -> int:
    from cloud.ops.jobs import default_jobs  # noqa: PLC0415

    jobs = {j.name: j for j in default_jobs(env.ops)}
    job = jobs[args.job]
    now = utcnow()
    # A manual run has its own slot: it never blocks or replaces a scheduled one.
    slot = f"manual-{now:%Y%m%dT%H%M%S.%fZ}"
    run_id = claim(env.engine, job.name, slot, "cli", now)
    assert run_id is not None
    outcome = execute(env.engine, job, run_id, slot, ctx=env.context(now), clock=utcnow)
    print(f"{job.name}: {'ok' if outcome.ok else 'error'}: {outcome.detail}")
    return 0 if outcome.ok else 1


# -- wiring --------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cloud.ops", description="mimamori operations: backups, billing, reports."
    )
    p.add_argument(
        "--env-file",
        help=f"the site's environment file, e.g. {DEFAULT_ENV_FILE} (default ${ENV_FILE_ENV})",
    )
    p.add_argument("--instance-file", help="cloud settings (default instance/mimamori.toml)")
    p.add_argument("--ops-file", help="operations settings (default instance/ops.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("backup", help="back up the database (and time series) now")
    sub.add_parser("backups", help="list the backups kept")
    r = sub.add_parser("restore", help="restore a backup (stop web, ingest and scheduler first)")
    r.add_argument("backup", help="backup directory")
    r.add_argument(
        "--database-url",
        help="target database for a drill (default: the configured one); with an "
        "InfluxDB backup, --influx-database is then needed too",
    )
    r.add_argument(
        "--database",
        help="target database of a drill on the configured server, e.g. mimamori_drill",
    )
    r.add_argument("--influx-database", help="target InfluxDB database of a drill")
    r.add_argument("--influx-url", help="InfluxDB server of a drill (default: the configured one)")
    r.add_argument("--force", action="store_true", help="replace a non-empty target database")
    r.add_argument("--no-timeseries", action="store_true", help="skip the time-series export")
    r.add_argument(
        "--import-timeseries",
        action="store_true",
        help="import the time-series export into the SQL backend too",
    )

    i = sub.add_parser("invoice", help="issue the invoices of a month")
    i.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    i.add_argument("--customer", type=int, action="append", help="only this customer id")
    i.add_argument("--regenerate", action="store_true", help="replace existing invoices")
    f = sub.add_parser("invoice-file", help="write an invoice as CSV or PDF")
    f.add_argument("number")
    f.add_argument("--format", choices=("csv", "pdf"), default="pdf")
    f.add_argument("-o", "--output", required=True, help="file, or - for stdout")

    m = sub.add_parser("report", help="write a customer's monthly report")
    m.add_argument("--customer", type=int, required=True)
    m.add_argument("--month", type=_month, required=True, help="YYYY-MM")
    m.add_argument("--format", choices=("csv", "pdf"), default="pdf")
    m.add_argument("-o", "--output", required=True, help="file, or - for stdout")

    a = sub.add_parser("availability", help="monthly availability per component and service")
    a.add_argument("--month", type=_month, help="YYYY-MM (default: this month)")
    a.add_argument("--json", action="store_true")
    h = sub.add_parser("health", help="check every component once")
    h.add_argument("--record", action="store_true", help="also record the results")

    n = sub.add_parser("announce", help="plan a maintenance announcement")
    n.add_argument("--title", required=True)
    n.add_argument("--body", default="")
    n.add_argument("--start", type=_instant, required=True, help="ISO time with offset")
    n.add_argument("--end", type=_instant, required=True, help="ISO time with offset")
    n.add_argument("--component", action="append", help="affected component (repeatable)")
    n.add_argument("--customer", type=int, action="append", help="affected customer id")
    n.add_argument("--lead-hours", type=int, help="mail this many hours ahead")
    n.add_argument(
        "--mute-alarms",
        action="store_true",
        help="the affected customers' alarms are recorded as muted and page nobody meanwhile",
    )

    j = sub.add_parser("run-job", help="run one scheduled job now")
    j.add_argument(
        "job",
        choices=(
            "health",
            "announcements",
            "forward_files",
            "backup",
            "retention",
            "invoices",
            "reports",
        ),
    )
    return p


COMMANDS = {
    "backup": cmd_backup,
    "backups": cmd_backups,
    "invoice": cmd_invoice,
    "invoice-file": cmd_invoice_file,
    "report": cmd_report,
    "availability": cmd_availability,
    "health": cmd_health,
    "announce": cmd_announce,
    "run-job": cmd_run_job,
}


def _require_settings(args: argparse.Namespace) -> None:
    """Name the environment file for the loader; ConfigError if nothing says
    which site this is."""
    if args.env_file:
        os.environ[ENV_FILE_ENV] = args.env_file
    named = (
        os.environ.get(ENV_FILE_ENV)
        or args.instance_file
        or os.environ.get(INSTANCE_FILE_ENV)
        or os.environ.get("MIMAMORI_DATABASE_URL")
        or DEFAULT_INSTANCE_FILE.is_file()
    )
    if not named:
        raise ConfigError(
            f"no settings: pass --env-file {DEFAULT_ENV_FILE} (or set ${ENV_FILE_ENV}); "
            "the built-in defaults describe no site"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        _require_settings(args)
        if args.command == "restore":
            return cmd_restore(args)
        env = build(
            instance_file=args.instance_file,
            ops_file=args.ops_file,
            with_checks=args.command in ("health", "run-job"),
        )
        try:
            return COMMANDS[args.command](env, args)
        finally:
            env.engine.dispose()
    except (CloudError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
