"""Routing per channel and maintenance windows on the site and in the API
(customer admin; the other customer's terminals stay out of reach)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from cloud.alarms.engine import Context, raise_level
from cloud.models import (
    AuditEntry,
    ForwardingEndpoint,
    MaintenanceWindow,
    NotificationTarget,
    Severity,
    Terminal,
)
from cloud.notify import sftp
from tests.support.api import bearer, issue_tokens
from tests.support.web import T0, login_as, post_form


def windows(world: Any) -> list[MaintenanceWindow]:
    with world.session() as s:
        return list(s.scalars(sa.select(MaintenanceWindow).order_by(MaintenanceWindow.id)))


def test_admin_plans_a_window_for_one_channel_and_ends_it(client, world):
    login_as(client, "admin_a")
    # The clock is 12:00 JST; the form speaks the customer's local time.
    response = post_form(
        client,
        "/maintenance",
        data={
            "starts_at": "2026-03-10T11:30",
            "ends_at": "2026-03-10T15:00",
            "terminal_id": "TA1",
            "channels": ["leak1.ior"],
            "reason": "年次点検",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    (w,) = windows(world)
    assert (w.terminal_id, w.channels, w.reason) == ("TA1", ["leak1.ior"], "年次点検")
    assert w.starts_at.isoformat() == "2026-03-10T02:30:00+00:00"
    page = client.get("/maintenance").get_data(as_text=True)
    assert f'class="window-active" data-window="{w.id}"' in page and "年次点検" in page
    assert post_form(client, "/maintenance", f"/maintenance/{w.id}/end").status_code == 302
    (w,) = windows(world)
    assert w.ends_at == T0
    with world.session() as s:
        actions = s.scalars(sa.select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["maintenance.create", "maintenance.end"]


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        ({"terminal_id": "TA1", "channels": ["nope"]}, 400, "Unknown channel nope."),
        ({"terminal_id": "TB1"}, 404, ""),  # the other customer's terminal
        ({"ends_at": "2026-03-10T11:00"}, 400, "The end must be after the start."),
        ({"ends_at": "not a time"}, 400, "is not a date and time"),
        ({"starts_at": "0001-01-01T00:00"}, 400, "is not a date and time"),
    ],
)
def test_bad_windows_are_refused_with_a_reason(client, world, data, status, text):
    login_as(client, "admin_a")
    form = {"starts_at": "2026-03-10T11:30", "ends_at": "2026-03-10T15:00", **data}
    response = post_form(client, "/maintenance", data=form)
    assert response.status_code == status and text in response.get_data(as_text=True)
    assert windows(world) == []


def test_viewer_sees_windows_but_cannot_plan_one(client, world):
    login_as(client, "viewer_a")
    assert client.get("/maintenance").status_code == 200
    data = {"starts_at": "2026-03-10T11:30", "ends_at": "2026-03-10T15:00"}
    assert post_form(client, "/maintenance", data=data).status_code == 403


def test_a_target_for_one_contact_input_through_the_form(client, world):
    login_as(client, "admin_a")
    form = {
        "channel": "email",
        "address": "breaker@acme.test",
        "terminal_id": "TA1",
        "channel_name": "pm1.kw",
        "min_severity": "warning",
        "enabled": "1",
    }
    assert post_form(client, "/targets", data=form).status_code == 302
    with world.session() as s:
        target = s.scalars(
            sa.select(NotificationTarget).where(NotificationTarget.address == "breaker@acme.test")
        ).one()
        assert target.channel_name == "pm1.kw"
    bad = post_form(client, "/targets", data={**form, "channel_name": "di.di9"})
    assert bad.status_code == 400 and "Unknown channel di.di9." in bad.get_data(as_text=True)


def test_api_windows_and_channel_targets(client, world):
    tokens = issue_tokens(world)

    def call(who: str, method: str, path: str, **kw: Any) -> Any:
        return client.open(f"/api/v1{path}", method=method, headers=bearer(tokens[who]), **kw)

    body = {
        "starts_at": "2026-03-10T11:30:00+09:00",
        "ends_at": "2026-03-10T13:00:00+09:00",
        "terminal_id": "TA1",
        "channels": ["th1.t"],
        "reason": "sensor swap",
    }
    created = call("admin_a", "POST", "/maintenance-windows", json=body)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["starts_at"].startswith("2026-03-10T02:30:00")
    for bad in ("2026-03-10", "0001-01-01T00:00:00+14:00", "soon"):
        refused = call("admin_a", "POST", "/maintenance-windows", json={**body, "ends_at": bad})
        assert refused.status_code == 400, bad
    listed = call("admin_a", "GET", "/maintenance-windows").get_json()["items"]
    assert [w["channels"] for w in listed] == [["th1.t"]]
    assert call("admin_b", "GET", "/maintenance-windows").get_json()["items"] == []
    with world.session() as s:  # an alarm on that channel meanwhile is muted
        alarm = raise_level(
            s,
            s.get(Terminal, "TA1"),
            "th1.t",
            "hi",
            severity=Severity.WARNING,
            value=41.0,
            threshold=40.0,
            at=T0,
            ctx=Context(T0),
        )
        s.commit()
        alarm_id = alarm.id
    assert call("admin_a", "GET", f"/alarms/{alarm_id}").get_json()["muted"] is True
    wid = created.get_json()["id"]
    assert call("admin_b", "POST", f"/maintenance-windows/{wid}/end").status_code == 404
    assert call("admin_a", "POST", f"/maintenance-windows/{wid}/end").status_code == 200
    target = call(
        "admin_a",
        "POST",
        "/targets",
        json={"channel": "email", "address": "t@acme.test", "channel_name": "th1.t"},
    )
    assert target.status_code == 201 and target.get_json()["channel_name"] == "th1.t"


def test_a_chat_target_is_saved_and_shown_with_its_tokens_masked(client, world):
    login_as(client, "admin_a")
    form = {
        "channel": "chat",
        "address": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ",
        "min_severity": "alarm",
        "enabled": "1",
    }
    assert post_form(client, "/targets", data=form).status_code == 302
    page = client.get("/targets").get_data(as_text=True)
    assert "slack://T...2/A...D/T...Q" in page and "TIiajkdnlazkcOXrIdevi7FQ" not in page
    for bad in ("smtp://mail.example/x", "not a url", "json://10.0.0.5/hook"):
        response = post_form(client, "/targets", data={**form, "address": bad})
        assert response.status_code == 400, bad


def test_an_sftp_endpoint_gets_its_own_key_and_pins_the_host_key(client, world):
    login_as(client, "admin_a")
    _private, host_line = sftp.new_key("server")  # any Ed25519 public line will do
    form = {
        "name": "HULFT inbox",
        "url": "sftp://hulft@bms.acme.test:2222/recv/mimamori",
        "terminal_id": "TA1",
        "host_key": f"bms.acme.test {host_line}",
        "file_period": "hourly",
        "file_scope": "customer",
        "file_timezone": "Asia/Tokyo",
    }
    response = post_form(client, "/forwarding", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)[-3000:]
    with world.session() as s:
        ep = s.scalars(sa.select(ForwardingEndpoint).where(ForwardingEndpoint.kind == "sftp")).one()
        assert (ep.file_period, ep.file_scope, ep.file_timezone) == (
            "hourly",
            "customer",
            "Asia/Tokyo",
        )
        assert ep.host_key == " ".join(host_line.split()[:2])
        assert ep.files_from == T0  # the period holding now: 12:00 JST
        public = sftp.public_line(ep.ssh_key, "")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert public.split()[1] in page and "BEGIN OPENSSH" not in page
    assert sftp.fingerprint(ep.host_key) in page
    # The host key is required, and must be a key.
    for bad in ("", "not a key"):
        again = post_form(client, "/forwarding", data={**form, "host_key": bad})
        assert again.status_code == 400 and "host key" in again.get_data(as_text=True)
    # A new key replaces the old one at once.
    assert post_form(client, "/forwarding", f"/forwarding/{ep.id}/rotate").status_code == 302
    with world.session() as s:
        assert s.get(ForwardingEndpoint, ep.id).ssh_key != ep.ssh_key
