"""The scheduled jobs: what runs when, each a function of a :class:`Context`.

================  =============================  ==============================================
job               when (operations zone)         does
================  =============================  ==============================================
health            every ``health_interval_s``    check components, record, failure notices
alarm_sweep       every minute                   offline/stale/demand conditions, reminders
command_timeouts  every minute                   store timed_out on unanswered remote commands
announcements     every ``announce_interval_s``  mail maintenance announcements when due
forward_files     every 5 minutes (setting)      queue the CSV files of SFTP endpoints
backup            daily at ``backup_at``         database (+ time-series export), prune
retention         daily at ``retention_at``      archive/delete logs, samples, evidence
invoices          1st at ``invoices_at``         invoices of the previous month
reports           1st at ``reports_at``          reports of the previous month, kept, mailed
================  =============================  ==============================================
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import sqlalchemy as sa

from cloud.alarms.conditions import sweep
from cloud.models import Customer
from cloud.models import commands as terminal_commands
from cloud.notify import files
from cloud.ops import announcements, availability, backup, billing, report_issue, retention
from cloud.ops.context import Context
from cloud.ops.errors import BillingError
from cloud.ops.health import run_checks
from cloud.ops.schedule import DailyAt, Every, Job, MonthlyAt, previous_month
from cloud.ops.settings import OpsSettings


def health(ctx: Context) -> str:
    results = run_checks(ctx.checks, ctx.ops.check_timeout_s)
    with ctx.sessions.begin() as session:
        availability.record(session, results, ctx.now)
    with ctx.sessions.begin() as session:
        queued = announcements.failure_notices(
            session, list(ctx.checks), ctx.now, ctx.ops.failure_notice_after_min
        )
    down = [r.component for r in results if not r.ok]
    return f"down: {', '.join(down) or 'none'}; notices queued: {queued}"


# The cloud-side alarm conditions and the reminders of unacknowledged alarms
# (cloud.alarms.conditions.sweep): every minute, the resolution of their delays.
SWEEP_INTERVAL_S = 60


def alarm_sweep(ctx: Context) -> str:
    """Evaluate offline, stale and demand and send due reminders. ``sweep``
    commits per terminal in its own session, so one bad terminal does not
    undo the others; an error still marks the run failed."""
    with ctx.sessions() as session:
        result = sweep(session, ctx.now, ctx.store)
    return (
        f"offline marked {result.offline}, stale checked {result.stale_checked}, "
        f"demand checked {result.demand_checked}, reminders {result.reminders}"
    )


def command_timeouts(ctx: Context) -> str:
    """Store ``timed_out`` on remote commands unanswered past their expiry
    (pages and the API show it from then on without computing it)."""
    with ctx.sessions.begin() as session:
        n = terminal_commands.time_out(session, ctx.now)
    return f"commands timed out: {n}"


def announce(ctx: Context) -> str:
    with ctx.sessions.begin() as session:
        queued = announcements.announce_due(session, ctx.now, ctx.ops.announce_lead_hours)
    return f"maintenance mails queued: {queued}"


def forward_files(ctx: Context) -> str:
    grace = timedelta(seconds=ctx.ops.forward_files_grace_s)
    with ctx.sessions.begin() as session:
        queued = files.queue_due(session, ctx.now, grace)
    return f"forwarded files queued: {queued}"


def run_backup(ctx: Context) -> str:
    made = backup.make_backup(ctx.engine, ctx.store, ctx.ops, ctx.now)
    # Read back as a restore would: a backup that cannot be read fails the run.
    checked = backup.verify(made, ctx.ops)
    kept = backup.list_backups(ctx.ops.backup_dir)
    rows = sum(t["rows"] for t in made.manifest["tables"].values())
    return f"{made.path.name}: {rows} rows; {checked}; {len(kept)} generations kept"


def run_retention(ctx: Context) -> str:
    report = retention.run(
        ctx.engine,
        now=ctx.now,
        zone=ctx.ops.tz,
        log_dir=Path(ctx.ops.log_dir),
        archive_dir=Path(ctx.ops.archive_dir),
        online_months=ctx.ops.log_online_months,
        archive_months=ctx.ops.log_archive_months,
        evidence_months=ctx.ops.evidence_months,
    )
    if ctx.settings.retention_days:
        cutoff = ctx.now - timedelta(days=ctx.settings.retention_days)
        ctx.store.delete_before(cutoff)
        report.samples_before = int(cutoff.timestamp())
    return report.summary()


def _last_month(ctx: Context) -> date:
    return previous_month(ctx.now.astimezone(ctx.ops.tz).date())


def invoices(ctx: Context) -> str:
    month = _last_month(ctx)
    with ctx.sessions.begin() as session:
        run = billing.generate(session, month, ctx.ops, ctx.now)
    summary = (
        f"{month:%Y-%m}: issued {len(run.issued)}, kept {len(run.skipped)}, "
        f"nothing to bill {len(run.empty)}"
    )
    if run.failed:
        # The others are committed; the run is marked failed so someone looks.
        raise BillingError(f"{summary}; failed {run.failed}")
    return summary


def reports(ctx: Context) -> str:
    """Issue last month's reports: kept in the database, mailed once to the
    recipients each customer chose, and a copy written under ``reports_dir``."""
    month = _last_month(ctx)
    out = Path(ctx.ops.reports_dir) / f"{month:%Y-%m}"
    out.mkdir(parents=True, exist_ok=True)
    mailed = 0
    with ctx.sessions() as session:
        customers = session.scalars(
            sa.select(Customer).where(Customer.active.is_(True)).order_by(Customer.id)
        ).all()
        for customer in customers:
            row, _report, queued = report_issue.issue(
                session, ctx.store, customer, month, ops=ctx.ops, now=ctx.now
            )
            # One customer at a time: its report and its mails commit together.
            session.commit()
            mailed += queued
            (out / f"customer-{customer.id}.csv").write_bytes(row.csv)
            (out / f"customer-{customer.id}.pdf").write_bytes(row.pdf)
    return f"{month:%Y-%m}: {len(customers)} reports, {mailed} mails queued, copies in {out}"


def default_jobs(ops: OpsSettings) -> list[Job]:
    """Every job with the times from ``ops`` (see the table in the module doc)."""
    h_backup, m_backup = ops.time_of("backup_at")
    h_ret, m_ret = ops.time_of("retention_at")
    h_inv, m_inv = ops.time_of("invoices_at")
    h_rep, m_rep = ops.time_of("reports_at")
    return [
        Job("health", Every(ops.health_interval_s), health),
        Job("alarm_sweep", Every(SWEEP_INTERVAL_S), alarm_sweep),
        Job("command_timeouts", Every(SWEEP_INTERVAL_S), command_timeouts),
        Job("announcements", Every(ops.announce_interval_s), announce),
        Job("forward_files", Every(ops.forward_files_interval_s), forward_files),
        Job("backup", DailyAt(h_backup, m_backup), run_backup),
        Job("retention", DailyAt(h_ret, m_ret), run_retention),
        Job("invoices", MonthlyAt(1, h_inv, m_inv), invoices),
        Job("reports", MonthlyAt(1, h_rep, m_rep), reports),
    ]
