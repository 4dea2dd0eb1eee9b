"""Monthly customer reports from real time series (SQL store on SQLite and
PostgreSQL): figures, JST times, CSV and a PDF that renders."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.models import Alarm, AlarmState, ChannelSpec, Customer, Delivery, Severity, apply_birth
from cloud.models.ops import MonthlyReport
from cloud.notify import outbox
from cloud.ops import report_issue
from cloud.ops.jobs import default_jobs
from cloud.ops.lease import Lease
from cloud.ops.report_docs import report_csv, report_pdf
from cloud.ops.reports import customer_report
from cloud.ops.scheduler import Scheduler
from cloud.timeseries import Point, SqlStore
from tests.support.notify import FAST, settings_for
from tests.support.ops import context, customer, ops_settings, terminal
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
MARCH = datetime(2026, 3, 1, tzinfo=JST)
STEP = 300  # one sample every 5 minutes
PER_DAY = 86400 // STEP
LEAK_PEAK = datetime(2026, 3, 10, 14, 25, tzinfo=JST)
DEMAND_PEAK = datetime(2026, 3, 5, 10, 0, tzinfo=JST)
GAP_DAY = datetime(2026, 3, 20, tzinfo=JST)
RESET_AT = datetime(2026, 3, 15, 9, 0, tzinfo=JST)
NOW = datetime(2026, 4, 1, 7, 0, tzinfo=JST)


def series(start: datetime, end: datetime):
    t = int(start.timestamp())
    while t < int(end.timestamp()):
        yield t
        t += STEP


def write_month(store, tid: str, start: datetime) -> None:
    end = datetime(2026, 4, 1, tzinfo=JST)
    points = []
    kwh = 1000.0
    for n, t in enumerate(series(start - timedelta(days=1), end + timedelta(days=1))):
        at = datetime.fromtimestamp(t, JST)
        # Leakage: 0.5 mA, with the month's peak at LEAK_PEAK (and the same
        # value again later: the first occurrence is the one reported).
        ior = 12.5 if at in (LEAK_PEAK, LEAK_PEAK + timedelta(days=10)) else 0.5 + (n % 3) / 10
        if at < start or at >= end:
            ior = 99.0  # outside the month: must be ignored
        points.append(Point(tid, "ior", t, ior))
        points.append(Point(tid, "io", t, 8.0 if n == 1000 else 1.0))
        if not GAP_DAY <= at < GAP_DAY + timedelta(days=1):
            kw = 50.0
            if DEMAND_PEAK <= at < DEMAND_PEAK + timedelta(minutes=30):
                kw = 120.0
            elif DEMAND_PEAK + timedelta(minutes=30) <= at < DEMAND_PEAK + timedelta(hours=1):
                kw = 100.0
            points.append(Point(tid, "kw", t, kw))
        kwh = 0.0 if at == RESET_AT else kwh + 0.5  # meter swapped at RESET_AT
        points.append(Point(tid, "kwh", t, kwh))
    store.write(points)


def setup(session, store):
    owner = customer(session, "株式会社みまもり")
    specs = [
        ChannelSpec(0, "ior", "mA", "leak", -1),
        ChannelSpec(1, "io", "mA", "leak", -1),
        ChannelSpec(2, "kw", "kW", "power", -2),
        ChannelSpec(3, "kwh", "kWh", "energy", -1),
    ]
    full = terminal(session, owner, "T0001", registered=date(2026, 2, 20), name="第1受電室")
    late = terminal(session, owner, "T0002", registered=date(2026, 3, 16), name="第2受電室")
    for t in (full, late):
        apply_birth(session, t.id, specs, boot=1, at=MARCH - timedelta(days=30))

    def alarm(raised, cleared, tid="T0001", cond="ior_high"):
        session.add(
            Alarm(
                terminal_id=tid,
                channel="ior",
                cond=cond,
                severity=Severity.ALARM,
                state=AlarmState.CLEARED if cleared else AlarmState.RAISED,
                raised_at=raised,
                cleared_at=cleared,
                value=12.5,
                threshold=10.0,
            )
        )

    alarm(MARCH - timedelta(days=1), MARCH + timedelta(days=1))  # open across the start
    alarm(LEAK_PEAK, LEAK_PEAK + timedelta(minutes=10))
    alarm(MARCH + timedelta(days=40), None)  # April: not in the report
    alarm(MARCH - timedelta(days=5), MARCH - timedelta(days=4))  # February only
    session.commit()
    write_month(store, "T0001", MARCH)
    write_month(store, "T0002", datetime(2026, 3, 16, tzinfo=JST))
    return owner


def test_monthly_report_figures_and_documents(engine, tmp_path):
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        owner = setup(s, store)
        report = customer_report(s, store, owner, date(2026, 3, 1), now=NOW, sample_interval_s=STEP)
    full, late = report.terminals
    assert full.start == MARCH.astimezone(UTC)
    assert full.leakage.channel == "ior" and full.leakage.value == 12.5
    assert full.leakage.at == LEAK_PEAK.astimezone(UTC)
    assert full.demand.channel == "kw" and full.demand.value == 120.0
    assert full.demand.at == DEMAND_PEAK.astimezone(UTC)
    [energy] = full.energy
    samples = 31 * PER_DAY
    # Every sample adds 0.5 kWh except the swap to a new meter at RESET_AT.
    assert energy.used == pytest.approx((samples - 2) * 0.5)
    by_channel = {c.channel: c for c in full.completeness}
    assert by_channel["ior"].received == by_channel["ior"].expected == samples
    assert by_channel["kw"].received == samples - PER_DAY
    assert str(by_channel["kw"].percent) == "96.7"  # 30/31, rounded down
    assert [(a.raised_at, a.cleared_at is None) for a in full.alarms] == [
        ((MARCH - timedelta(days=1)).astimezone(UTC), False),
        (LEAK_PEAK.astimezone(UTC), False),
    ]
    # Registered on the 16th: the report covers 16..31 March only.
    assert late.start == datetime(2026, 3, 16, tzinfo=JST).astimezone(UTC)
    assert {c.expected for c in late.completeness} == {16 * PER_DAY}
    assert late.leakage.at == (LEAK_PEAK + timedelta(days=10)).astimezone(UTC)

    rows = list(csv.DictReader(io.StringIO(report_csv(report).decode("utf-8-sig"))))
    leak = next(r for r in rows if r["terminal"] == "T0001" and r["item"] == "max_leakage")
    assert (leak["value"], leak["unit"], leak["time"]) == (
        "12.5",
        "mA",
        "2026-03-10T14:25:00+09:00",
    )
    assert sum(1 for r in rows if r["terminal"] == "T0001" and r["item"] == "alarm") == 2

    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(report_pdf(report, ops_settings(tmp_path)))
    assert shutil.which("pdftotext"), "pdftotext missing: apt-get install poppler-utils"
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for expected in (
        "月次報告書 2026年3月",
        "第1受電室",
        "最大漏洩電流",
        "2026-03-10 14:25:00",
        "120 kW",
        "2026-03-05 10:00",
        "警報一覧(2 件)",
        "第2受電室",
    ):
        assert expected in text, expected
    assert text.count("\f") >= 2  # a page per terminal


def test_the_reports_job_keeps_copies_and_mails_each_recipient_once(engine, tmp_path):
    store = SqlStore(engine)
    with db.session_factory(engine)() as s:
        owner = setup(s, store)
        owner.report_recipients = ["denki@example.jp", "keiri@example.jp"]
        customer(s, "解約済", active=False, report_recipients=["gone@example.jp"])
        s.commit()
    ops = ops_settings(tmp_path)

    def run(clock_now):
        sched = Scheduler(
            engine,
            default_jobs(ops),
            Lease(engine, "s", 30, clock=lambda: clock_now),
            zone=ops.tz,
            clock=lambda: clock_now,
            context=lambda at: context(engine, ops, at, store=store),
        )
        sched.tick_lease()
        return sched.fire("reports")

    outcome = run(NOW)
    assert outcome.ok and outcome.slot == "2026-04", outcome.detail
    assert "1 reports, 2 mails queued" in outcome.detail
    with db.session_factory(engine)() as s:
        [kept] = s.scalars(sa.select(MonthlyReport)).all()
        assert (kept.customer_id, kept.month, kept.terminals) == (owner.id, MARCH.date(), 2)
        assert kept.pdf.startswith(b"%PDF") and "第1受電室" in kept.csv.decode("utf-8-sig")
        mails = s.scalars(sa.select(Delivery).order_by(Delivery.recipient)).all()
        assert [(d.recipient, d.event, d.billable) for d in mails] == [
            ("denki@example.jp", "report", False),
            ("keiri@example.jp", "report", False),
        ]
        # The job again (a re-run by hand, a second scheduler): no second mail.
        issued = report_issue.issue(
            s, store, s.get(Customer, owner.id), MARCH.date(), ops=ops, now=NOW
        )
        s.commit()
        assert issued[2] == 0 and s.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 2
    out = tmp_path / "reports" / "2026-03"
    assert sorted(p.name for p in out.iterdir()) == [
        f"customer-{owner.id}.csv",
        f"customer-{owner.id}.pdf",
    ]
    assert (out / f"customer-{owner.id}.pdf").read_bytes().startswith(b"%PDF")


def test_the_report_mail_carries_the_kept_files_and_goes_out_once(engine, tmp_path):
    store = SqlStore(engine)
    sessions = db.session_factory(engine)
    with sessions() as s:
        owner = setup(s, store)
        owner.report_recipients = ["denki@example.jp"]
        s.commit()
        owner_id = owner.id
    with sessions() as s:
        owner = s.get(Customer, owner_id)
        report_issue.issue(s, store, owner, MARCH.date(), ops=ops_settings(tmp_path), now=NOW)
        s.commit()
    with SmtpSink() as sink, sessions() as worker:
        settings = settings_for(sink.port, site_url="https://mimamori.example")
        assert outbox.run_once(worker, NOW, settings, FAST).sent == 1
        assert outbox.run_once(worker, NOW + timedelta(hours=1), settings, FAST).claimed == 0
        [mail] = sink.wait_for(1)
    assert mail.rcpt_tos == ("denki@example.jp",)
    assert str(mail["Subject"]) == "[mimamori] 2026-03 月次報告書 株式会社みまもり"
    assert "https://mimamori.example/reports" in mail.body
    files = {a.get_filename(): a.get_content() for a in mail.message.iter_attachments()}
    pdf, csv_name = (f"report-2026-03-{owner_id:06d}.{x}" for x in ("pdf", "csv"))
    assert set(files) == {pdf, csv_name}
    assert files[pdf].startswith(b"%PDF")
    assert "max_leakage" in files[csv_name]
