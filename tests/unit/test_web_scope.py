"""A customer never sees or touches another customer's objects, through any page.

Every id of customer B in a URL or a form, used by customer A's users,
answers 404 (exactly like an id that does not exist) and changes nothing.
"""

from __future__ import annotations

import pytest

from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    AuditEntry,
    ForwardingEndpoint,
    NotificationTarget,
)
from tests.support.web import (
    csrf_token,
    login_as,
)

GET_B = [
    "/terminals/TB1",
    "/terminals/TB1/latest.json",
    "/terminals/TB1/series.json?channel=leak1.ior",
    "/terminals/TB1/export.csv?start=2026-03-09&end=2026-03-10",
    "/terminals/TB1/settings",
    "/alarms/{alarm_b}",
    "/targets/{target_b}",
    "/forwarding/{endpoint_b}",
]
POST_B = [
    ("/terminals/TB1/settings", {"heartbeat": "300", "upload": "60"}),
    ("/alarms/{alarm_b}/ack", {"comment": "not mine"}),
    (
        "/targets/{target_b}",
        {
            "channel": "email",
            "address": "evil@acme.test",
            "min_severity": "warning",
            "enabled": "1",
        },
    ),
    ("/targets/{target_b}/test", {}),
    ("/targets/{target_b}/delete", {}),
    ("/forwarding/{endpoint_b}", {"name": "x", "url": "https://evil.test/"}),
    ("/forwarding/{endpoint_b}/rotate", {}),
    ("/forwarding/{endpoint_b}/delete", {}),
]


def snapshot(world):
    with world.session() as s:
        return (
            [(a.id, a.state, a.ack_comment) for a in s.query(Alarm).order_by(Alarm.id)],
            [
                (t.id, t.address)
                for t in s.query(NotificationTarget).order_by(NotificationTarget.id)
            ],
            [
                (e.id, e.url, e.hmac_secret)
                for e in s.query(ForwardingEndpoint).order_by(ForwardingEndpoint.id)
            ],
            s.query(AuditEntry).filter(~AuditEntry.action.startswith("auth.")).count(),
        )


@pytest.mark.parametrize("who", ["admin_a", "viewer_a"])
def test_other_customers_objects_in_urls_are_not_found(client, world, who):
    login_as(client, who)
    for template in GET_B:
        path = template.format(**world.ids)
        assert client.get(path).status_code == 404, path
    # The same pages for A's own objects work (the 404 is about ownership).
    own = {
        "alarm_b": world.ids["alarm_a"],
        "target_b": world.ids["target_a"],
        "endpoint_b": world.ids["endpoint_a"],
    }
    for template in GET_B:
        path = template.replace("TB1", "TA1").format(**own)
        assert client.get(path).status_code == 200, path


def test_other_customers_objects_in_posts_are_not_found_and_unchanged(client, world):
    login_as(client, "admin_a")
    before = snapshot(world)
    for template, data in POST_B:
        path = template.format(**world.ids)
        token = csrf_token(client, "/")
        assert client.post(path, data={"csrf_token": token, **data}).status_code == 404, path
    assert snapshot(world) == before
    assert app_publisher(client).messages == []


def app_publisher(client):
    return client.application.extensions["mimamori_publisher"]


def test_other_customers_terminal_in_a_form_is_not_found(client, world):
    login_as(client, "admin_a")
    before = snapshot(world)
    token = csrf_token(client, "/targets")
    target = client.post(
        "/targets",
        data={
            "csrf_token": token,
            "channel": "email",
            "address": "me@acme.test",
            "terminal_id": "TB1",
            "min_severity": "warning",
            "enabled": "1",
        },
    )
    assert target.status_code == 404
    endpoint = client.post(
        "/forwarding",
        data={
            "csrf_token": token,
            "name": "x",
            "url": "https://acme.test/in",
            "terminal_id": "TB1",
        },
    )
    assert endpoint.status_code == 404
    assert snapshot(world) == before


def test_a_rule_of_another_terminal_in_the_settings_form_is_not_found(client, world):
    login_as(client, "admin_b")
    token = csrf_token(client, "/terminals/TB1/settings")
    rule = world.ids["rule_a"]  # belongs to TA1 of customer A
    response = client.post(
        "/terminals/TB1/settings",
        data={"csrf_token": token, f"rule-{rule}-delete": "1", "heartbeat": "300", "upload": "60"},
    )
    assert response.status_code == 404
    with world.session() as s:
        assert s.get(AlarmCondition, rule) is not None


def test_lists_show_only_own_objects(client, world):
    login_as(client, "admin_a")
    pages = {
        p: client.get(p).get_data(as_text=True)
        for p in ("/", "/alarms", "/alarms?terminal=TB1", "/targets", "/forwarding")
    }
    for path, html in pages.items():
        assert "Sub B" not in html, path
        # (the query string itself is echoed in the language form's return path)
        assert "TB1" not in html.replace("terminal=TB1", ""), path
        assert "duty@beta.test" not in html and "beta.test/senml" not in html, path
    assert "duty@acme.test" in pages["/targets"]
    assert "acme.test/senml" in pages["/forwarding"]
    assert f"/alarms/{world.ids['alarm_a']}" in pages["/alarms"]
    assert f"/alarms/{world.ids['alarm_b']}" not in pages["/alarms?terminal=TB1"]


def test_staff_see_every_customer(app, client, world):
    login_as(client, "operator")
    html = client.get("/").get_data(as_text=True)
    assert "Sub A" in html and "Sub B" in html
    assert client.get(f"/alarms/{world.ids['alarm_b']}").status_code == 200
    installer = login_as(app.test_client(), "installer")
    assert installer.get("/terminals/TB1").status_code == 200


def test_customers_cannot_enter_the_operator_area(client):
    login_as(client, "admin_a")
    for path in (
        "/admin",
        "/admin/customers",
        "/admin/users",
        "/admin/terminals",
        "/admin/audit",
        "/admin/terminals/TA1",
    ):
        assert client.get(path).status_code == 403, path


def test_installers_reach_terminals_only(client):
    login_as(client, "installer")
    assert client.get("/admin/terminals").status_code == 200
    assert client.get("/admin/terminals/TA1").status_code == 200
    for path in ("/admin/customers", "/admin/users", "/admin/audit", "/admin/announcements"):
        assert client.get(path).status_code == 403, path


def test_viewer_may_acknowledge_but_not_configure(client, world):
    login_as(client, "viewer_a")
    token = csrf_token(client, "/")
    settings = client.post(
        "/terminals/TA1/settings", data={"csrf_token": token, "heartbeat": "120", "upload": "60"}
    )
    assert settings.status_code == 403
    target = client.post(
        "/targets",
        data={
            "csrf_token": token,
            "channel": "email",
            "address": "v@acme.test",
            "min_severity": "warning",
            "enabled": "1",
        },
    )
    assert target.status_code == 403
    ack = client.post(
        f"/alarms/{world.ids['alarm_a']}/ack", data={"csrf_token": token, "comment": "on it"}
    )
    assert ack.status_code == 302
    with world.session() as s:
        assert s.get(Alarm, world.ids["alarm_a"]).state == AlarmState.ACKNOWLEDGED
