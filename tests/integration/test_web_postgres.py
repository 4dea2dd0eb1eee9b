"""The whole site on PostgreSQL (production's database): every page, the
scoping, a settings save, an acknowledge and the throttle's queries."""

from __future__ import annotations

import pytest

from cloud.models import Alarm, AlarmState, ConfigStatus, Terminal
from tests.support.head import upgrade_to_head
from tests.support.postgres import session_server
from tests.support.web import (
    EMAILS,
    Clock,
    build_world,
    csrf_token,
    login,
    login_as,
    make_app,
    post_form,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def world(request):
    url = session_server(request.config).create_database("web")
    upgrade_to_head(url)
    w = build_world(url)
    yield w
    w.engine.dispose()


def test_site_on_postgresql(world):
    clock = Clock()
    app = make_app(world, clock)
    ids = world.ids
    operator = login_as(app.test_client(), "operator")
    for path in (
        "/",
        "/terminals/TA1",
        "/terminals/TB1/settings",
        "/alarms?state=open",
        f"/alarms/{ids['alarm_b']}",
        "/targets",
        "/forwarding",
        "/admin/customers",
        "/admin/users",
        "/admin/terminals",
        "/admin/announcements",
        "/admin/audit?actor=acme",
        "/admin/availability",
        "/terminals/TA1/series.json?channel=leak1.ior",
        "/terminals/TA1/export.csv?start=2026-03-09&end=2026-03-09",
    ):
        assert operator.get(path).status_code == 200, path
    customer = login_as(app.test_client(), "admin_a")
    assert customer.get("/terminals/TB1").status_code == 404
    assert customer.get(f"/alarms/{ids['alarm_b']}").status_code == 404
    rid = ids["rule_a"]
    token = csrf_token(customer, "/terminals/TA1/settings")
    response = customer.post(
        "/terminals/TA1/settings",
        data={
            "csrf_token": token,
            f"rule-{rid}-present": "1",
            f"rule-{rid}-warn": "25",
            f"rule-{rid}-alarm": "50",
            f"rule-{rid}-enabled": "1",
            "heartbeat": "300",
            "upload": "60",
        },
    )
    assert response.status_code == 302
    assert (
        post_form(
            customer,
            f"/alarms/{ids['alarm_a']}",
            f"/alarms/{ids['alarm_a']}/ack",
            data={"comment": "on it"},
        ).status_code
        == 302
    )
    with world.session() as s:
        assert s.get(Terminal, "TA1").config_status == ConfigStatus.PENDING
        assert s.get(Alarm, ids["alarm_a"]).state == AlarmState.ACKNOWLEDGED
    # The throttle's audit queries on PostgreSQL.
    attacker = app.test_client()
    attacker.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    for _ in range(3):
        assert login(attacker, EMAILS["viewer_a"], "guess").status_code == 401
    assert login(attacker, EMAILS["viewer_a"], "guess").status_code == 429
