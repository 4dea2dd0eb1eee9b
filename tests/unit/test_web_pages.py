"""Every page for every role; dashboard, alarms, targets, forwarding, operator area."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud.broker.passwd import verify_password
from cloud.models import (
    Alarm,
    AlarmState,
    AuditEntry,
    Customer,
    Delivery,
    ForwardingEndpoint,
    NotificationTarget,
    Role,
    Terminal,
    User,
)
from cloud.models.ops import Announcement
from edge.installer import siteconfig
from tests.support.web import (
    csrf_token,
    login,
    login_as,
    post_form,
)

JST_ZONE = ZoneInfo("Asia/Tokyo")

CUSTOMER_PAGES = [
    "/",
    "/terminals/TA1",
    "/terminals/TA1/settings",
    "/alarms",
    "/alarms?state=open&severity=warning&from=2026-03-01&to=2026-03-10",
    "/alarms/{alarm_a}",
    "/targets",
    "/targets/{target_a}",
    "/forwarding",
    "/forwarding/{endpoint_a}",
    "/maintenance",
    "/password",
]
OPERATOR_PAGES = [
    "/admin",
    "/admin/customers",
    "/admin/customers/{customer_a}",
    "/admin/users",
    "/admin/users/{viewer_a}",
    "/admin/terminals",
    "/admin/terminals/TA1",
    "/admin/announcements",
    "/admin/prices",
    "/admin/audit?action=auth.&actor=acme",
]


@pytest.mark.parametrize("who", ["operator", "installer", "admin_a", "viewer_a"])
def test_every_page_renders_for_every_role(client, world, who):
    login_as(client, who)
    for template in CUSTOMER_PAGES:
        path = template.format(**world.ids)
        response = client.get(path)
        assert response.status_code == 200, (who, path)
        assert response.mimetype == "text/html"
    for template in OPERATOR_PAGES:
        path = template.format(**world.ids)
        expected = {
            "operator": 200,
            "installer": 200 if "terminals" in path or path == "/admin" else 403,
        }.get(who, 403)
        assert client.get(path).status_code == expected, (who, path)


def test_anonymous_pages_render(client):
    for path in ("/login", "/password/reset"):
        assert client.get(path).status_code == 200


def test_dashboard_shows_state_values_alarms_and_completeness(client):
    login_as(client, "admin_a")
    html = client.get("/").get_data(as_text=True)
    row = html[html.index('data-terminal="TA1"') :]
    row = row[: row.index("</tr>")]
    assert "Sub A" in row and 'data-status="warning"' in row
    assert 'class="badge sev-warning">1<' in row  # the open warning
    # The alarmed channel is on the line with its value and unit.
    assert re.search(r'class="sev-warning">leak1.ior <b>[\d.]+ <span class="unit">mA', row)
    # 48 h of one-minute samples of 3 of its 10 channels, declared 10 days ago, over
    # the 7-day window (6 whole UTC days + today until 03:00 UTC): 8640 expected of
    # 10 channels x (6 x 1440 + 180) minutes.
    match = re.search(r'class="num">([\d.]+) %', row)
    assert match and float(match.group(1)) == pytest.approx(
        8640 / (10 * (6 * 1440 + 180)) * 100, abs=0.05
    )
    assert re.search(r"<b>1</b>Warning", html)  # the summary band
    assert "TB1" not in html  # another customer's terminal


def test_terminal_page_has_live_values_graph_slots_and_export(client):
    login_as(client, "viewer_a")
    html = client.get("/terminals/TA1").get_data(as_text=True)
    # One graph; every channel can be put on it.
    assert html.count('<figure class="graph"') == 1
    assert html.count('name="graph-channel"') == 10
    assert 'data-channel="leak1.ior"' in html and "/vendor/uplot/uPlot.iife.min.js" in html
    assert 'data-zone="Asia/Tokyo"' in html
    assert "/terminals/TA1/export.csv" in html


def test_alarm_filters(client, world):
    login_as(client, "operator")

    def ids(query):
        html = client.get("/alarms" + query).get_data(as_text=True)
        return sorted(int(i) for i in re.findall(r'href="/alarms/(\d+)"', html))

    a, b = world.ids["alarm_a"], world.ids["alarm_b"]
    assert ids("") == sorted([a, b])
    assert ids("?terminal=TA1") == [a]
    assert ids("?severity=alarm") == [b]
    assert ids("?state=open") == sorted([a, b])
    assert ids("?state=cleared") == []
    assert ids("?cond=leak&from=2026-03-10&to=2026-03-10") == sorted([a, b])
    assert ids("?from=2026-03-11") == []
    assert client.get("/alarms?from=yesterday").status_code == 400


def test_acknowledge_with_comment_notifies_and_shows_the_ledger(client, world):
    login_as(client, "viewer_a")
    aid = world.ids["alarm_a"]
    page = client.get(f"/alarms/{aid}").get_data(as_text=True)
    assert "duty@acme.test" in page and "sent" in page  # the ledger row of the raise
    response = post_form(
        client, f"/alarms/{aid}", f"/alarms/{aid}/ack", data={"comment": "Electrician on the way"}
    )
    assert response.status_code == 302
    with world.session() as s:
        alarm = s.get(Alarm, aid)
        assert alarm.state == AlarmState.ACKNOWLEDGED
        assert alarm.ack_comment == "Electrician on the way"
        assert alarm.acked_by_id == world.ids["viewer_a"]
        events = [
            d.event
            for d in s.scalars(
                sa.select(Delivery).where(Delivery.alarm_id == aid).order_by(Delivery.id)
            )
        ]
        assert events == ["raised", "acknowledged"]  # the ack went to the outbox
        assert s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "alarm.acknowledge")
        ).one().details == {"comment": "Electrician on the way"}
    page = client.get(f"/alarms/{aid}").get_data(as_text=True)
    assert "Electrician on the way" in page and 'name="comment"' not in page
    # A second acknowledge is refused politely.
    again = post_form(
        client, f"/alarms/{aid}", f"/alarms/{aid}/ack", data={"comment": "x"}, follow_redirects=True
    )
    assert "Only a raised alarm can be acknowledged" in again.get_data(as_text=True)


def test_targets_add_edit_test_delete(client, world):
    login_as(client, "admin_a")
    response = post_form(
        client,
        "/targets",
        data={
            "channel": "email",
            "address": "Night@Acme.test",
            "terminal_id": "TA1",
            "cond": "leak",
            "min_severity": "alarm",
            "language": "en",
            "notify_recovery": "1",
            "enabled": "1",
        },
    )
    assert response.status_code == 302
    with world.session() as s:
        target = s.scalars(
            sa.select(NotificationTarget).where(NotificationTarget.address == "night@acme.test")
        ).one()
        assert (target.terminal_id, target.cond, target.min_severity, target.language) == (
            "TA1",
            "leak",
            "alarm",
            "en",
        )
        tid = target.id
    bad = post_form(
        client,
        "/targets",
        data={"channel": "email", "address": "not an address", "min_severity": "warning"},
    )
    assert bad.status_code == 400 and "not an e-mail address" in bad.get_data(as_text=True)
    assert (
        post_form(
            client,
            f"/targets/{tid}",
            data={
                "channel": "email",
                "address": "night@acme.test",
                "min_severity": "warning",
                "enabled": "",
            },
        ).status_code
        == 302
    )
    assert post_form(client, "/targets", f"/targets/{tid}/test").status_code == 302
    with world.session() as s:
        target = s.get(NotificationTarget, tid)
        assert not target.enabled and target.terminal_id is None
        test = s.scalars(sa.select(Delivery).where(Delivery.target_id == tid)).one()
        assert test.event == "test" and not test.billable and test.status == "queued"
    assert post_form(client, "/targets", f"/targets/{tid}/delete").status_code == 302
    with world.session() as s:
        assert s.get(NotificationTarget, tid) is None
        actions = [
            e.action
            for e in s.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.object_type == "target")
                .order_by(AuditEntry.id)
            )
        ]
        assert actions == ["target.create", "target.update", "target.test", "target.delete"]


def test_send_test_is_rate_limited_per_target_and_per_customer(client, world, clock):
    login_as(client, "admin_a")
    with world.session() as s:
        customer = world.ids["customer_a"]
        extra = [
            NotificationTarget(customer_id=customer, channel="email", address=f"t{i}@acme.test")
            for i in range(4)
        ]
        s.add_all(extra)
        s.commit()
        ids = [t.id for t in extra]

    def press(target_id):
        clock.advance(1)
        return post_form(client, "/targets", f"/targets/{target_id}/test")

    def tests_queued():
        with world.session() as s:
            return s.scalar(
                sa.select(sa.func.count()).select_from(Delivery).where(Delivery.event == "test")
            )

    # A few tests per target, then a pause is asked for.
    assert [press(ids[0]).status_code for _ in range(4)] == [302, 302, 302, 429]
    assert tests_queued() == 3
    refused = press(ids[0])
    assert refused.status_code == 429 and "Too many test messages" in refused.get_data(True)
    # Other targets of the customer, until the customer's own limit.
    codes = [press(t).status_code for t in ids[1:] for _ in range(3)]
    assert codes == [302] * 7 + [429] * 2
    assert tests_queued() == 10
    # The limits slide: an hour later the customer may test again.
    clock.advance(3600)
    assert press(ids[0]).status_code == 302


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "https://intranet.invalid/",  # does not resolve: told the same
    ],
)
def test_webhooks_to_internal_addresses_are_refused_when_saved(client, world, url):
    login_as(client, "admin_a")
    target = {"channel": "webhook", "address": url, "min_severity": "warning"}
    refused = post_form(client, "/targets", data=target)
    assert refused.status_code == 400
    assert "must be a public internet address" in refused.get_data(as_text=True)
    endpoint = post_form(client, "/forwarding", data={"name": "x", "url": url})
    assert endpoint.status_code == 400
    assert "must be a public internet address" in endpoint.get_data(as_text=True)
    with world.session() as s:
        assert not s.scalars(
            sa.select(NotificationTarget).where(NotificationTarget.address == url)
        ).all()
        assert not s.scalars(
            sa.select(ForwardingEndpoint).where(ForwardingEndpoint.url == url)
        ).all()


def test_webhook_target_signing_secret_is_shown_once(client, world):
    login_as(client, "admin_a")
    form = {"channel": "webhook", "address": "https://hooks.acme.test/alarm", "enabled": "1"}
    form["min_severity"] = "warning"
    response = post_form(client, "/targets", data=form)
    with world.session() as s:
        target = s.scalars(
            sa.select(NotificationTarget).where(NotificationTarget.address == form["address"])
        ).one()
        secret = target.hmac_secret
    assert response.status_code == 200 and secret in response.get_data(as_text=True)
    assert secret not in client.get("/targets").get_data(as_text=True)
    assert secret not in client.get(f"/targets/{target.id}").get_data(as_text=True)
    rotated = post_form(client, "/targets", f"/targets/{target.id}/secret")
    with world.session() as s:
        new_secret = s.get(NotificationTarget, target.id).hmac_secret
    assert new_secret != secret and new_secret in rotated.get_data(as_text=True)
    # Mail targets have no secret to show.
    form = {"channel": "email", "address": "ops@acme.test", "min_severity": "warning"}
    assert post_form(client, "/targets", data=form).status_code == 302


def test_forwarding_secret_is_shown_once(client, world):
    login_as(client, "admin_a")
    response = post_form(
        client,
        "/forwarding",
        data={"name": "Our BMS", "url": "https://bms.acme.test/in", "terminal_id": "TA1"},
    )
    html = response.get_data(as_text=True)
    with world.session() as s:
        endpoint = s.scalars(
            sa.select(ForwardingEndpoint).where(ForwardingEndpoint.name == "Our BMS")
        ).one()
        secret = endpoint.hmac_secret
    assert response.status_code == 200 and secret in html
    assert secret not in client.get("/forwarding").get_data(as_text=True)
    assert secret not in client.get(f"/forwarding/{endpoint.id}").get_data(as_text=True)
    rotated = post_form(client, "/forwarding", f"/forwarding/{endpoint.id}/rotate")
    with world.session() as s:
        new_secret = s.get(ForwardingEndpoint, endpoint.id).hmac_secret
    assert new_secret != secret and new_secret in rotated.get_data(as_text=True)
    bad = post_form(client, "/forwarding", data={"name": "x", "url": "ftp://x"})
    assert bad.status_code == 400
    assert (
        post_form(
            client,
            "/forwarding",
            f"/forwarding/{endpoint.id}",
            data={"name": "Our BMS", "url": "https://bms.acme.test/v2", "enabled": ""},
        ).status_code
        == 302
    )
    with world.session() as s:
        e = s.get(ForwardingEndpoint, endpoint.id)
        assert e.url.endswith("/v2") and not e.enabled and e.terminal_id is None


def test_forwarding_status_shows_last_results(client, world, clock):
    with world.session() as s:
        e = s.get(ForwardingEndpoint, world.ids["endpoint_a"])
        e.record_attempt(clock.now, 503, "Service Unavailable")
        s.commit()
    login_as(client, "admin_a")
    html = client.get(f"/forwarding/{world.ids['endpoint_a']}").get_data(as_text=True)
    assert "503" in html and "Service Unavailable" in html


def test_operator_manages_customers_users_and_terminals(app, client, world):
    login_as(client, "operator")
    assert (
        post_form(
            client,
            "/admin/customers",
            data={
                "name": "Gamma Shoji",
                "contracted_demand_kw": "120",
                "timezone": "Asia/Tokyo",
                "language": "ja",
                "active": "1",
            },
        ).status_code
        == 302
    )
    bad = post_form(client, "/admin/customers", data={"name": "X", "timezone": "Mars/Base"})
    assert bad.status_code == 400 and "Mars/Base" in bad.get_data(as_text=True)
    with world.session() as s:
        gamma = s.scalars(sa.select(Customer).where(Customer.name == "Gamma Shoji")).one()
        assert gamma.contracted_demand_kw == 120
    assert (
        post_form(
            client,
            "/admin/users",
            data={
                "email": "boss@gamma.test",
                "name": "Boss",
                "role": "customer_admin",
                "customer_id": str(gamma.id),
                "language": "ja",
                "active": "1",
            },
        ).status_code
        == 302
    )
    mail = app.extensions["mimamori_mailer"].sent[-1]
    assert mail.to == "boss@gamma.test" and "/welcome/" in mail.body
    dup = post_form(
        client,
        "/admin/users",
        data={"email": "boss@gamma.test", "role": "customer_viewer", "customer_id": str(gamma.id)},
    )
    assert dup.status_code == 400 and "has an account already" in dup.get_data(as_text=True)
    orphan = post_form(
        client,
        "/admin/users",
        data={"email": "x@gamma.test", "role": "customer_viewer", "customer_id": ""},
    )
    assert orphan.status_code == 400
    assert (
        post_form(
            client,
            "/admin/terminals",
            data={
                "id": "TG1",
                "name": "Gamma main",
                "customer_id": str(gamma.id),
                "registered_on": "2026-03-10",
                "contract_start": "2026-04-01",
            },
        ).status_code
        == 302
    )
    bad_id = post_form(client, "/admin/terminals", data={"id": "T/1", "name": "x"})
    assert bad_id.status_code == 400
    assert (
        post_form(
            client,
            "/admin/terminals/TG1",
            data={
                "name": "Gamma main",
                "customer_id": str(gamma.id),
                "contract_start": "2026-04-01",
                "contract_end": "2026-09-30",
                "cancellation_notice_on": "2026-08-20",
            },
        ).status_code
        == 302
    )
    with world.session() as s:
        t = s.get(Terminal, "TG1")
        assert str(t.contract_end) == "2026-09-30" and t.customer_id == gamma.id
        user = s.scalars(sa.select(User).where(User.email == "boss@gamma.test")).one()
        assert user.role == Role.CUSTOMER_ADMIN
        actions = {e.action for e in s.scalars(sa.select(AuditEntry))}
        assert {"customer.create", "user.create", "terminal.create", "terminal.update"} <= actions


def test_operator_cannot_lock_themself_out(client, world):
    login_as(client, "operator")
    response = post_form(
        client,
        f"/admin/users/{world.ids['operator']}",
        data={
            "email": "op@mimamori.test",
            "role": "customer_viewer",
            "customer_id": str(world.ids["customer_a"]),
            "active": "1",
        },
    )
    assert response.status_code == 400


def test_provisioning_shows_the_password_once_and_stores_the_hash(client, world):
    login_as(client, "installer")
    response = post_form(client, "/admin/terminals/TA1", "/admin/terminals/TA1/provision")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    password = re.search(r'id="mqtt-password">([^<]+)<', html).group(1)
    site_text = re.search(r'<pre id="site-json">([^<]+)</pre>', html).group(1)
    site = json.loads(site_text.replace("&#34;", '"').replace("&quot;", '"'))
    assert site["credentials"] == {"username": "TA1", "password": password}
    assert site["broker"]["port"] == 8883 and site["broker"]["tls"] is True
    with world.session() as s:
        stored = s.get(Terminal, "TA1").credential_hash
    assert stored.startswith("$7$") and password not in stored
    assert verify_password(password, stored)
    # The installer's own checker accepts the file (after the wiring is added).
    site["wiring"] = [{"unit": 1, "profile": "IM-100", "name": "leak1"}]
    siteconfig.check(site)
    # Once: a second provisioning is refused; rotating makes a new password.
    again = post_form(client, "/admin/terminals/TA1", "/admin/terminals/TA1/provision")
    assert again.status_code == 409 and password not in again.get_data(as_text=True)
    rotated = post_form(
        client, "/admin/terminals/TA1", "/admin/terminals/TA1/provision", data={"rotate": "1"}
    )
    new = re.search(r'id="mqtt-password">([^<]+)<', rotated.get_data(as_text=True)).group(1)
    assert new != password
    assert password not in client.get("/admin/terminals/TA1").get_data(as_text=True)
    with world.session() as s:
        assert [
            e.action
            for e in s.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action.startswith("terminal.credentials"))
                .order_by(AuditEntry.id)
            )
        ] == ["terminal.credentials.create", "terminal.credentials.rotate"]


def test_announcements_reach_the_dashboards_concerned(app, client, world, clock):
    login_as(client, "operator")
    assert (
        post_form(
            client,
            "/admin/announcements",
            data={
                "title": "Broker maintenance",
                "body": "Short outage expected.",
                "starts_at": "2026-03-12T01:00",
                "ends_at": "2026-03-12T02:00",
                "customer_ids": str(world.ids["customer_a"]),
                "components": "broker",
            },
        ).status_code
        == 302
    )
    with world.session() as s:
        item = s.scalars(sa.select(Announcement)).one()
        assert item.customer_ids == [world.ids["customer_a"]] and item.components == ["broker"]
        assert item.starts_at.isoformat() == "2026-03-11T16:00:00+00:00"  # 01:00 JST
    a = login_as(app.test_client(), "viewer_a").get("/").get_data(as_text=True)
    b = login_as(app.test_client(), "admin_b").get("/").get_data(as_text=True)
    assert "Broker maintenance" in a and "2026-03-12 01:00 JST" in a
    assert "Broker maintenance" not in b
    bad = post_form(
        client,
        "/admin/announcements",
        data={"title": "x", "starts_at": "2026-03-12T02:00", "ends_at": "2026-03-12T01:00"},
    )
    assert bad.status_code == 400


def test_audit_log_lists_and_filters(client, world):
    login(client, "admin@acme.test", "wrong password")
    login_as(client, "operator")
    html = client.get("/admin/audit?action=auth.login.failed").get_data(as_text=True)
    assert "admin@acme.test" in html and "auth.login.failed" in html
    table = html.split('id="audit"')[1].split("</table>")[0]
    assert "op@mimamori.test" not in table


def test_health_endpoint_needs_no_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json() == {"status": "ok"}


def test_availability_page_shows_the_measured_figures(client, world, clock):
    from datetime import timedelta

    from cloud.models.ops import HealthCheck
    from cloud.ops.settings import COMPONENTS

    minute = clock.now.replace(second=0, microsecond=0)
    with world.session() as s:
        for k in range(1, 61):
            at = minute - timedelta(minutes=k)
            for name in COMPONENTS:
                s.add(HealthCheck(component=name, at=at, ok=not (name == "broker" and k <= 10)))
        s.commit()
    login_as(client, "operator")
    html = client.get("/admin/availability").get_data(as_text=True)
    table = html.split('id="availability-2026-03"')[1].split("</table>")[0]
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"<td>(\w+)</td>\s*<td class=\"num\">[^<]*</td>\s*<td class=\"num\">(\d+)</td>", table
        )
    }
    assert rows["database"] == "60" and rows["broker"] == "50" and rows["Service"] == "50"
    installer = login_as(client.application.test_client(), "installer")
    assert installer.get("/admin/availability").status_code == 403


def test_customers_availability_starts_when_the_customer_did(client, world, clock):
    from datetime import timedelta

    from cloud.models import Customer
    from cloud.models.ops import HealthCheck
    from cloud.ops.settings import COMPONENTS

    minute = clock.now.replace(second=0, microsecond=0)
    with world.session() as s:
        for k in range(1, 61):
            for name in COMPONENTS:
                at = minute - timedelta(minutes=k)
                s.add(HealthCheck(component=name, at=at, ok=not (name == "web" and k > 50)))
        s.get(Customer, world.ids["customer_a"]).created_at = minute - timedelta(minutes=30)
        s.commit()
    login_as(client, "admin_a")
    html = client.get("/billing").get_data(as_text=True)
    table = html.split('id="service-availability"')[1].split("</table>")[0]
    # The web outage an hour ago was before this customer's time.
    assert "2026-03" in table and "100.000 %" in table
    post_form(client, "/", "/logout")
    login_as(client, "operator")
    html = client.get("/admin/availability").get_data(as_text=True)
    assert "83.333 %" in html.split('id="availability-2026-03"')[1].split("</table>")[0]


def test_operator_reads_the_demo_mail_sink_and_nobody_else_does(
    client, world, tmp_path, monkeypatch
):
    import smtplib
    from email.message import EmailMessage

    from cloud.demo.mailsink import MailSink
    from cloud.services.mailsink import MAILSINK_DIR_ENV

    login_as(client, "operator")
    assert client.get("/admin/mail").status_code == 404  # production: no sink
    monkeypatch.setenv(MAILSINK_DIR_ENV, str(tmp_path))
    with MailSink(tmp_path) as sink:
        msg = EmailMessage()
        msg["From"], msg["To"] = "alarm@mimamori.test", "tanaka@alpha.test"
        msg["Subject"] = "【警報】漏洩電流 Ior <script>x</script>"
        msg.set_content("Ior 31.2 mA")
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.send_message(msg)
    html = client.get("/admin/mail").get_data(as_text=True)
    assert "【警報】漏洩電流 Ior" in html and "tanaka@alpha.test" in html
    assert "<script>x</script>" not in html  # escaped like every other page
    assert "/admin/mail" in client.get("/admin").get_data(as_text=True)
    post_form(client, "/", "/logout")
    login_as(client, "admin_a")
    assert client.get("/admin/mail").status_code in (403, 404)


def test_customer_admins_get_their_invoices_as_csv_and_pdf_and_never_another_customers(
    client, world
):
    from datetime import date

    from cloud.models.ops import Invoice, InvoiceLine

    with world.session() as s:
        ids = {}
        for key, number, total in (
            ("customer_a", "INV-A-1", 11_000),
            ("customer_b", "INV-B-1", 22_000),
        ):
            inv = Invoice(
                number=number,
                customer_id=world.ids[key],
                period=date(2026, 10, 1),
                customer_name=key,
                subtotal=total * 10 // 11,
                tax_rate_percent=10,
                tax=total - total * 10 // 11,
                total=total,
                lines=[
                    InvoiceLine(
                        position=1,
                        kind="base",
                        terminal_id=None,
                        description="基本料金",
                        quantity=1,
                        unit_price=total * 10 // 11,
                        amount=total * 10 // 11,
                    )
                ],
            )
            s.add(inv)
            s.flush()
            ids[key] = inv.id
        s.commit()
    login_as(client, "admin_a")
    page = client.get("/billing").get_data(as_text=True)
    assert "INV-A-1" in page and "INV-B-1" not in page and "¥11,000" in page
    csv = client.get(f"/billing/invoices/{ids['customer_a']}.csv")
    assert csv.status_code == 200 and "attachment" in csv.headers["Content-Disposition"]
    assert "INV-A-1" in csv.get_data().decode("utf-8-sig")
    pdf = client.get(f"/billing/invoices/{ids['customer_a']}.pdf")
    assert pdf.status_code == 200 and pdf.get_data().startswith(b"%PDF")
    assert client.get(f"/billing/invoices/{ids['customer_b']}.csv").status_code == 404
    assert client.get(f"/billing/invoices/{ids['customer_b']}.pdf").status_code == 404
    post_form(client, "/", "/logout")
    login_as(client, "viewer_a")
    assert client.get("/billing").status_code == 403


def test_pages_tell_micropython_boards_from_virtual_terminals(client, world):
    with world.session() as s:
        s.get(Terminal, "TA1").firmware_version = "0.1.0 micropython 1.27.0 esp32"
        s.get(Terminal, "TB1").firmware_version = "0.1.0 cpython 3.11.7 linux"
        s.commit()
    login_as(client, "viewer_a")
    html = client.get("/terminals/TA1").get_data(as_text=True)
    assert "MicroPython board" in html and "1.27.0 (esp32)" in html
    post_form(client, "/", "/logout")
    login_as(client, "operator")
    html = client.get("/admin/terminals").get_data(as_text=True)
    row_a = re.search(r"TA1</a>.*?</tr>", html, re.S)
    row_b = re.search(r"TB1</a>.*?</tr>", html, re.S)
    assert row_a and "MicroPython board" in row_a.group(0)
    assert row_b and "Virtual terminal" in row_b.group(0) and "MicroPython" not in row_b.group(0)


def test_operators_change_prices_from_a_month_on_audited_and_nobody_else_may(client, world, clock):
    # The clock says 2026-03-01 JST or later (T0); prices cannot change in the past.
    today = clock().astimezone(JST_ZONE).date()
    this_month = today.replace(day=1)
    later = (this_month + timedelta(days=62)).replace(day=1)
    login_as(client, "operator")
    page = client.get("/admin/prices").get_data(as_text=True)
    assert "Insulation monitoring with mail alerts" in page and "¥780" in page
    assert "¥5,000" in page and "No change yet" in page
    ok = post_form(
        client,
        "/admin/prices",
        data={"item": "insulation", "unit_price": "820", "effective_from": later.strftime("%Y-%m")},
    )
    assert ok.status_code == 302
    page = client.get("/admin/prices").get_data(as_text=True)
    assert f"from {later:%Y-%m}: ¥820" in page and "¥780" in page  # today's price stays
    for data, message in (
        ({"unit_price": "820", "effective_from": "2020-01"}, "already billed"),
        ({"unit_price": "-1", "effective_from": later.strftime("%Y-%m")}, "whole yen"),
        ({"unit_price": "1.5", "effective_from": later.strftime("%Y-%m")}, "not a whole number"),
        ({"unit_price": "820", "effective_from": "soon"}, "not a month"),
        (
            {"unit_price": "820", "effective_from": later.strftime("%Y-%m"), "item": "gold"},
            "Unknown",
        ),
    ):
        bad = post_form(client, "/admin/prices", data={"item": "insulation", **data})
        assert bad.status_code == 400 and message in bad.get_data(as_text=True), data
    with world.session() as s:
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "price.set")).one()
        assert entry.details == {
            "item": "insulation",
            "from": later.isoformat(),
            "before": 780,
            "after": 820,
        }
        assert entry.actor == "op@mimamori.test"
    post_form(client, "/", "/logout")
    login_as(client, "admin_a")
    assert client.get("/admin/prices").status_code == 403
    token = csrf_token(client, "/")
    denied = client.post(
        "/admin/prices",
        data={
            "csrf_token": token,
            "item": "insulation",
            "unit_price": "1",
            "effective_from": later.strftime("%Y-%m"),
        },
    )
    assert denied.status_code == 403


def test_the_month_so_far_is_itemised_for_the_customer_and_any_customer_for_operators(
    client, world
):
    login_as(client, "admin_a")
    page = client.get("/billing").get_data(as_text=True)
    draft = page[page.index('id="draft-lines"') :]
    # TA1's wiring (leakage, power, T/RH) and A's delivered mail.
    for item in ("insulation", "power", "environment", "notification"):
        assert f'data-item="{item}"' in draft, item
    assert "絶縁監視メール通報サービス 月額 TA1 Sub A" in draft
    assert "TB1" not in page and 'name="customer"' not in page
    # Another customer's month is not for them, even asked for by id.
    other = client.get(f"/billing?customer={world.ids['customer_b']}").get_data(as_text=True)
    assert "TA1 Sub A" in other and "TB1" not in other and "Beta" not in other
    post_form(client, "/", "/logout")
    login_as(client, "operator")
    page = client.get("/billing").get_data(as_text=True)
    assert "Choose a customer" in page and 'id="draft-lines"' not in page
    page = client.get(f"/billing?customer={world.ids['customer_b']}").get_data(as_text=True)
    # TB1 has no contract dates yet: nothing is owed.
    assert "Nothing to bill so far." in page[page.index('id="draft-lines"') :]
