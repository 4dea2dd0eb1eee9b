"""Monthly reports and the alarm history export, on the site and the API:
downloads, the month so far, report recipients (audited), tenant isolation."""

from __future__ import annotations

import csv
import io
from datetime import date

import sqlalchemy as sa

from cloud.models import AuditEntry, Customer
from cloud.models.ops import MonthlyReport
from tests.support.api import bearer, issue_tokens
from tests.support.web import csrf_token, login_as, post_form


def keep_reports(world):
    """An issued March report for each customer (files made up: the
    scheduler's are tested in tests/integration/test_ops_reports.py)."""
    ids = {}
    with world.session() as s:
        for key in ("customer_a", "customer_b"):
            row = MonthlyReport(
                customer_id=world.ids[key], month=date(2026, 2, 1), terminals=1,
                pdf=b"%PDF-1.4 " + key.encode(), csv=f"\ufeffterminal,{key}\r\n".encode(),
            )  # fmt: skip
            s.add(row)
            s.flush()
            ids[key] = row.id
        s.commit()
    return ids


def rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def test_customers_download_their_reports_and_never_anothers(client, world):
    ids = keep_reports(world)
    login_as(client, "viewer_a")
    page = client.get("/reports").get_data(as_text=True)
    assert 'data-month="2026-02"' in page and "Beta" not in page
    pdf = client.get(f"/reports/{ids['customer_a']}.pdf")
    assert pdf.status_code == 200 and pdf.get_data() == b"%PDF-1.4 customer_a"
    assert f"report-2026-02-{world.ids['customer_a']:06d}.pdf" in pdf.headers["Content-Disposition"]
    assert client.get(f"/reports/{ids['customer_b']}.pdf").status_code == 404
    assert client.get(f"/reports/{ids['customer_b']}.csv").status_code == 404
    # The month in progress, computed now from the samples.
    current = client.get("/reports/current.csv")
    assert current.status_code == 200
    lines = rows(current.get_data())
    assert {r["terminal"] for r in lines} == {"TA1"}
    assert any(r["item"] == "max_leakage" for r in lines)
    assert client.get("/reports/current.pdf").get_data().startswith(b"%PDF")
    # Viewers read who gets the mail; they do not change it.
    token = csrf_token(client, "/reports")
    denied = client.post("/reports/recipients", data={"csrf_token": token, "recipients": "x@y.jp"})
    assert denied.status_code == 403


def test_admins_choose_the_report_recipients_audited(client, world):
    login_as(client, "admin_a")
    bad = post_form(
        client,
        "/reports",
        "/reports/recipients",
        data={"recipients": "kanri@acme.test\nnot an address"},
    )
    assert bad.status_code == 302
    assert "Not an e-mail address: not an address" in client.get("/reports").get_data(as_text=True)
    ok = post_form(
        client, "/reports", "/reports/recipients",
        data={"recipients": "Kanri@Acme.test\n\nkeiri@acme.test, kanri@acme.test"},
    )  # fmt: skip
    assert ok.status_code == 302
    with world.session() as s:
        assert s.get(Customer, world.ids["customer_a"]).report_recipients == [
            "kanri@acme.test",
            "keiri@acme.test",
        ]
        assert s.get(Customer, world.ids["customer_b"]).report_recipients == []
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "report.recipients")
        ).one()
        assert entry.customer_id == world.ids["customer_a"]
        assert entry.details["after"] == ["kanri@acme.test", "keiri@acme.test"]
    # An admin of A naming B's customer id still changes A's list only.
    post_form(
        client, "/reports", "/reports/recipients",
        data={"recipients": "only@acme.test", "customer": str(world.ids["customer_b"])},
    )  # fmt: skip
    with world.session() as s:
        assert s.get(Customer, world.ids["customer_b"]).report_recipients == []
    post_form(client, "/", "/logout")
    login_as(client, "operator")
    assert "Choose a customer" in client.get("/reports").get_data(as_text=True)
    page = client.get(f"/reports?customer={world.ids['customer_a']}").get_data(as_text=True)
    assert "only@acme.test" in page


def test_alarm_history_exports_as_csv_with_the_list_filters(client, world):
    login_as(client, "admin_a")
    assert "/alarms/export.csv" in client.get("/alarms").get_data(as_text=True)
    r = client.get("/alarms/export.csv?state=open")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    [alarm] = rows(r.get_data())
    assert (alarm["terminal"], alarm["channel"], alarm["severity"]) == (
        "TA1",
        "leak1.ior",
        "warning",
    )
    assert alarm["condition_name"] == "leakage current"  # the user's language (English)
    assert alarm["raised_at"].endswith("+09:00")  # the customer's zone, offset written
    assert rows(client.get("/alarms/export.csv?state=cleared").get_data()) == []


def test_the_api_serves_reports_and_the_alarm_history(client, world):
    ids = keep_reports(world)
    tokens = issue_tokens(world)
    a = bearer(tokens["viewer_a"])
    listed = client.get("/api/v1/reports", headers=a).get_json()
    assert [(r["id"], r["month"], r["pdf"]) for r in listed["items"]] == [
        (ids["customer_a"], "2026-02", "/api/v1/reports/2026-02/pdf")
    ]
    pdf = client.get("/api/v1/reports/2026-02/pdf", headers=a)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.get_data() == b"%PDF-1.4 customer_a"
    assert client.get("/api/v1/reports/2026-01/csv", headers=a).status_code == 404
    # A customer's token cannot reach another customer's report, by id or by name.
    b_id = world.ids["customer_b"]
    other = client.get(f"/api/v1/reports/2026-02/csv?customer_id={b_id}", headers=a)
    assert other.status_code == 200 and "customer_a" in other.get_data(as_text=True)
    op = bearer(tokens["operator"])
    assert client.get("/api/v1/reports", headers=op).status_code == 400
    theirs = client.get(f"/api/v1/reports/2026-02/csv?customer_id={b_id}", headers=op)
    assert "customer_b" in theirs.get_data(as_text=True)
    export = client.get("/api/v1/alarms/export?state=open&from=2026-03-01", headers=a)
    assert export.status_code == 200 and export.mimetype == "text/csv"
    assert [r["terminal"] for r in rows(export.get_data())] == ["TA1"]
    assert client.get("/api/v1/alarms/export?from=March", headers=a).status_code == 400
