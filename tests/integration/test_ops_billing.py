"""Invoices on SQLite and a real PostgreSQL: contract rules, service
functions from the wiring, the price list over time, notification counts at
JST month boundaries, tax rounding, storage, documents."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.models import ChannelSpec, DeliveryStatus, ForwardingEndpoint, apply_birth
from cloud.models.ops import Invoice, Price
from cloud.ops import billing
from cloud.ops.invoice_docs import invoice_csv, invoice_pdf
from cloud.ops.jobs import default_jobs
from cloud.ops.lease import Lease
from cloud.ops.scheduler import Scheduler
from tests.support.ops import (
    context,
    customer,
    delivery,
    ops_settings,
    terminal,
)

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
MONTHS = [date(2026, m, 1) for m in (1, 2, 3, 4, 5)]

# terminal: (registered_on, cancellation notice, months owing the base fee)
CASES = {
    "NOTICE15": (date(2025, 12, 1), date(2026, 3, 15), {1, 2, 3}),  # ends 31 Mar
    "NOTICE16": (date(2025, 12, 1), date(2026, 3, 16), {1, 2, 3, 4}),  # ends 30 Apr
    "NOTICELAST": (date(2025, 11, 20), date(2026, 3, 31), {1, 2, 3, 4}),  # ends 30 Apr
    "MIDMONTH": (date(2026, 3, 10), None, {4, 5}),  # added mid-March: from April
    "FIRSTMONTH15": (date(2026, 3, 5), date(2026, 3, 12), set()),  # cancelled at once
    "FIRSTMONTH16": (date(2026, 3, 5), date(2026, 3, 20), {4}),  # one month
    "FEB15": (date(2026, 1, 15), date(2026, 2, 15), {2}),  # ends 28 Feb
    "FEB16": (date(2026, 1, 15), date(2026, 2, 16), {2, 3}),  # ends 31 Mar
    "FEB1ST": (date(2026, 2, 1), None, {2, 3, 4, 5}),  # starts on the 1st: Feb counts
}


@pytest.fixture
def session(engine):
    with db.session_factory(engine)() as s:
        yield s


def lines_by_month(session, owner, ops):
    out = {}
    for month in MONTHS:
        draft = billing.compute(session, owner, month, ops)
        out[month.month] = {(ln.kind, ln.terminal_id) for ln in draft.lines}
    return out


def test_the_cancellation_rule_and_mid_month_terminals(session, tmp_path):
    ops = ops_settings(tmp_path)
    owner = customer(session)
    for tid, (registered, notice, _) in CASES.items():
        terminal(session, owner, tid, registered=registered, notice=notice, kinds=("leak",))
    session.commit()
    got = lines_by_month(session, owner, ops)
    for tid, (registered, _, months) in CASES.items():
        base = {m for m, lines in got.items() if ("base", tid) in lines}
        assert base == months & {1, 2, 3, 4, 5}, tid
        reg = {m for m, lines in got.items() if ("registration", tid) in lines}
        assert reg == ({registered.month} if registered.year == 2026 else set()), tid


def test_a_registered_terminal_in_stock_before_its_contract_starts(session, tmp_path):
    ops = ops_settings(tmp_path)
    owner = customer(session)
    # Registered (and charged the fee) in January, contract from 1 March.
    terminal(
        session,
        owner,
        "STOCK",
        registered=date(2026, 1, 20),
        start=date(2026, 3, 1),
        kinds=("leak",),
    )
    # An explicit contract end before the notice rule's wins.
    terminal(
        session,
        owner,
        "ENDS",
        registered=date(2025, 6, 1),
        end=date(2026, 2, 10),
        notice=date(2026, 2, 5),
        kinds=("leak",),
    )
    session.commit()
    got = lines_by_month(session, owner, ops)
    assert got[1] == {("registration", "STOCK"), ("base", "ENDS")}
    assert got[2] == {("base", "ENDS")}
    assert got[3] == {("base", "STOCK")}


def test_notifications_count_by_jst_month_and_only_billable_delivered_ones(session, tmp_path):
    ops = ops_settings(tmp_path)
    owner = customer(session)
    other = customer(session, "他社")
    march_start = datetime(2026, 3, 1, tzinfo=JST)
    for at in (march_start, march_start + timedelta(days=30, hours=23, minutes=59)):
        delivery(session, owner, sent_at=at)  # first and last minute of March (JST)
    delivery(session, owner, sent_at=march_start - timedelta(seconds=1))  # February, JST
    delivery(session, owner, sent_at=datetime(2026, 4, 1, tzinfo=JST))  # April
    delivery(session, owner, sent_at=march_start + timedelta(days=2), billable=False)
    delivery(session, owner, sent_at=None, status=DeliveryStatus.QUEUED)
    delivery(session, owner, sent_at=None, status=DeliveryStatus.DEAD)
    delivery(session, other, sent_at=march_start + timedelta(days=3))
    session.commit()
    draft = billing.compute(session, owner, date(2026, 3, 1), ops)
    [line] = draft.lines
    assert (line.kind, line.quantity, line.unit_price, line.amount) == ("notification", 2, 10, 20)
    assert "2026年3月" in line.description
    assert billing.compute(session, owner, date(2026, 2, 1), ops).lines[0].quantity == 1


def set_prices(session, since, **prices):
    for item, price in prices.items():
        session.add(Price(item=item, effective_from=since, unit_price=price, created_by="test"))
    session.flush()


def test_tax_is_ten_percent_of_the_invoice_rounded_down_once(session, tmp_path):
    ops = ops_settings(tmp_path)
    set_prices(session, date(2026, 1, 1), insulation=2980, registration=9800, notification=7)
    owner = customer(session)
    terminal(session, owner, "A", registered=date(2026, 2, 1), kinds=("leak",))
    terminal(session, owner, "B", registered=date(2026, 3, 9), kinds=("leak",))
    for i in range(3):
        delivery(session, owner, sent_at=datetime(2026, 3, 2 + i, tzinfo=JST))
    session.commit()
    draft = billing.compute(session, owner, date(2026, 3, 1), ops)
    assert draft.subtotal == 2980 + 9800 + 3 * 7 == 12801
    # Per line: 298 + 980 + 2.1 -> rounding per line would give 1280; per invoice 1280.1 -> 1280.
    assert draft.tax == 1280 and draft.total == 14081
    assert all(isinstance(v, int) for v in (draft.subtotal, draft.tax, draft.total))


def test_generate_stores_invoices_once_and_reports_broken_contracts(session, tmp_path):
    ops = ops_settings(tmp_path)
    good = customer(session, "良い会社")
    terminal(session, good, "G1", registered=date(2026, 3, 3), name="第1受電室", kinds=("leak",))
    bad = customer(session, "日付誤り")
    terminal(session, bad, "B1", registered=date(2026, 3, 3), end=date(2026, 2, 28))
    idle = customer(session, "休眠")
    session.commit()
    now = datetime(2026, 4, 1, tzinfo=JST)
    run = billing.generate(session, date(2026, 3, 1), ops, now)
    session.commit()
    assert run.issued == [f"202603-{good.id:06d}"]
    assert run.empty == [idle.id]
    assert "ends 2026-02-28 before it starts" in run.failed[bad.id]
    invoice = session.scalar(sa.select(Invoice).where(Invoice.customer_id == good.id))
    assert (invoice.subtotal, invoice.tax, invoice.total) == (5000, 500, 5500)
    assert [(ln.position, ln.kind, ln.item, ln.amount) for ln in invoice.lines] == [
        (1, "registration", "registration", 5000)
    ]

    again = billing.generate(session, date(2026, 3, 1), ops, now)
    assert again.issued == [] and again.skipped == [invoice.number]
    delivery(session, good, sent_at=datetime(2026, 3, 20, tzinfo=JST))
    session.commit()
    redo = billing.generate(
        session, date(2026, 3, 1), ops, now, regenerate=True, customer_ids=[good.id]
    )
    session.commit()
    assert redo.issued == [invoice.number]
    session.expire_all()
    invoice = session.scalar(sa.select(Invoice).where(Invoice.customer_id == good.id))
    assert invoice.total == 5511  # (5000 + 10) * 1.1
    assert session.scalar(sa.select(sa.func.count()).select_from(Invoice)) == 1


def test_the_invoices_job_bills_the_previous_month_on_the_first(engine, tmp_path):
    ops = ops_settings(tmp_path)
    with db.session_factory(engine)() as s:
        owner = customer(s)
        terminal(s, owner, "T1", registered=date(2026, 2, 27))
        s.commit()
        owner_id = owner.id
    now = datetime(2026, 3, 1, 6, 0, tzinfo=JST)
    sched = Scheduler(
        engine,
        default_jobs(ops),
        Lease(engine, "s", 30, clock=lambda: now),
        zone=ops.tz,
        clock=lambda: now,
        context=lambda at: context(engine, ops, at),
    )
    sched.tick_lease()
    outcome = sched.fire("invoices")
    assert outcome.ok and outcome.slot == "2026-03", outcome.detail
    assert "2026-02: issued 1" in outcome.detail
    with db.session_factory(engine)() as s:
        invoice = s.scalar(sa.select(Invoice))
        assert (invoice.customer_id, invoice.period, invoice.total) == (
            owner_id,
            date(2026, 2, 1),
            5500,
        )


def test_invoice_csv_and_pdf_render_japanese(session, tmp_path):
    ops = ops_settings(
        tmp_path, issuer_name="みまもり株式会社", issuer_registration_number="T1234567890123"
    )
    owner = customer(session, "株式会社みまもり電気")
    terminal(session, owner, "T0001", registered=date(2026, 3, 10), name="第1受電室")
    terminal(
        session,
        owner,
        "T0002",
        registered=date(2025, 3, 10),
        name="第2受電室",
        kinds=("leak", "contact"),
    )
    for day in range(1, 8):
        delivery(session, owner, sent_at=datetime(2026, 3, day, tzinfo=JST))
    session.commit()
    billing.generate(session, date(2026, 3, 1), ops, datetime(2026, 4, 1, tzinfo=JST))
    session.commit()
    invoice = session.scalar(sa.select(Invoice))

    text = invoice_csv(invoice).decode("utf-8")
    assert text.startswith("\ufeffinvoice,period,customer")
    rows = text.strip().split("\r\n")
    # (5000 + 780 + 480 + 70) * 1.1 rounded down
    assert rows[-1].endswith(",total,,,合計,,,6963")
    assert "初期登録料 T0001 第1受電室" in text
    assert (
        ",base,insulation,T0002,絶縁監視メール通報サービス 月額 T0002 第2受電室,1,780,780" in text
    )
    assert ",base,contact,T0002,接点監視サービス 月額 T0002 第2受電室,1,480,480" in text
    assert ",notification,notification,,通報料 2026年3月配信分,7,10,70" in text

    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(invoice_pdf(invoice, ops, JST))
    for tool in ("pdftotext", "pdftoppm"):
        assert shutil.which(tool), f"{tool} missing: apt-get install poppler-utils"
    extracted = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for expected in (
        "請求書",
        "株式会社みまもり電気 御中",
        "¥6,963",
        "¥633",
        "絶縁監視メール通報サービス",
        "第1受電室",
        "T1234567890123",
        "2026年3月分",
    ):
        assert expected in extracted, expected
    subprocess.run(
        ["pdftoppm", "-r", "50", "-png", "-singlefile", str(pdf), str(tmp_path / "page")],
        check=True,
    )
    assert (tmp_path / "page.png").stat().st_size > 5000  # a rendered page, not a blank one


def test_naive_times_never_reach_the_ledger_query(session, tmp_path):
    # The month range is built in the customer's zone; a customer elsewhere
    # gets their own month boundaries.
    owner = customer(session, timezone="America/New_York")
    delivery(session, owner, sent_at=datetime(2026, 3, 1, 3, 0, tzinfo=UTC))  # still Feb there
    session.commit()
    ops = ops_settings(tmp_path)
    assert billing.compute(session, owner, date(2026, 2, 1), ops).lines[0].quantity == 1
    assert billing.compute(session, owner, date(2026, 3, 1), ops).lines == ()


def test_each_terminal_pays_for_the_functions_its_wiring_and_forwarding_use(session, tmp_path):
    ops = ops_settings(tmp_path)
    owner = customer(session, language="en")
    old = date(2025, 1, 1)
    terminal(session, owner, "POWER", registered=old, kinds=("power", "energy", "temperature"))
    terminal(session, owner, "NONE", registered=old)  # never announced its channels
    rewired = terminal(session, owner, "REWIRED", registered=old, kinds=("contact",))
    # Rewired on 10 March JST: contact until then, leakage after.
    apply_birth(
        session,
        "REWIRED",
        [ChannelSpec(0, "ior", "mA", "leak", -1)],
        boot=2,
        at=datetime(2026, 3, 10, tzinfo=JST),
    )
    session.add(
        ForwardingEndpoint(
            customer_id=owner.id,
            terminal_id=rewired.id,
            url="https://example.com/in",
            hmac_secret="s" * 32,
            created_at=datetime(2026, 3, 20, tzinfo=JST),
        )
    )
    session.commit()

    def lines(month):
        draft = billing.compute(session, owner, month, ops)
        return sorted((ln.terminal_id, ln.item, ln.amount) for ln in draft.lines)

    assert lines(date(2026, 2, 1)) == [
        ("POWER", "environment", 480),
        ("POWER", "power", 980),  # power and energy are one function
        ("REWIRED", "contact", 480),
    ]
    assert lines(date(2026, 3, 1)) == [
        ("POWER", "environment", 480),
        ("POWER", "power", 980),
        ("REWIRED", "contact", 480),  # both wirings lived in March
        ("REWIRED", "forwarding", 500),
        ("REWIRED", "insulation", 780),
    ]
    april = billing.compute(session, owner, date(2026, 4, 1), ops)
    assert sorted((ln.terminal_id, ln.item) for ln in april.lines)[-2:] == [
        ("REWIRED", "forwarding"),
        ("REWIRED", "insulation"),
    ]
    assert "Insulation monitoring with mail alerts, monthly, REWIRED" in {
        ln.description for ln in april.lines
    }


def test_a_price_change_applies_from_its_month_and_zero_is_not_charged(session, tmp_path):
    ops = ops_settings(tmp_path)
    owner = customer(session)
    terminal(session, owner, "T1", registered=date(2026, 3, 10), kinds=("leak",))
    for day in (date(2026, 3, 20), date(2026, 4, 20)):
        delivery(session, owner, sent_at=datetime.combine(day, datetime.min.time(), JST))
    set_prices(session, date(2026, 4, 1), insulation=900, notification=0)
    session.commit()

    def items(month):
        draft = billing.compute(session, owner, month, ops)
        return [(ln.item, ln.unit_price) for ln in draft.lines]

    assert items(date(2026, 3, 1)) == [("registration", 5000), ("notification", 10)]
    assert items(date(2026, 4, 1)) == [("insulation", 900)]  # no ¥0 notification line
