"""Security events (refused requests, CSRF failures, bad bearer tokens, bursts
of 404s) go to the ``mimamori.security`` log and into the audit view."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from cloud.models import AuditEntry
from tests.support.api import bearer
from tests.support.web import login_as

pytest_plugins = ["tests.support.web_fixtures"]  # app, client, clock, world

OUTSIDE = {"REMOTE_ADDR": "203.0.113.77"}


def security_entries(world):
    with world.session() as s:
        return [
            (e.action, e.ip, e.details.get("path"))
            for e in s.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action.startswith("security."))
                .order_by(AuditEntry.id)
            )
        ]


def test_refusals_are_logged_and_audited(app, client, world, caplog):
    caplog.set_level(logging.INFO, logger="mimamori.security")
    login_as(client, "viewer_a")
    for n in range(25):  # someone walking through other customers' ids
        assert client.get(f"/terminals/T{n:04d}", environ_base=OUTSIDE).status_code == 404
    assert client.get("/admin/audit", environ_base=OUTSIDE).status_code == 403
    assert client.post("/targets", data={}, environ_base=OUTSIDE).status_code == 400  # no CSRF
    api = app.test_client()
    assert (
        api.get("/api/v1/me", headers=bearer("mm_forged"), environ_base=OUTSIDE).status_code == 401
    )
    for n in range(25):  # someone walking through ids or paths
        api.get(f"/terminals/T{n:04d}", environ_base=OUTSIDE)
    entries = security_entries(world)
    assert entries == [
        ("security.not_found_burst", "203.0.113.77", "/terminals/T0019"),
        ("security.forbidden", "203.0.113.77", "/admin/audit"),
        ("security.csrf", "203.0.113.77", "/targets"),
        ("security.bad_token", "203.0.113.77", "/api/v1/me"),
    ]
    logged = [r for r in caplog.records if r.name == "mimamori.security"]
    assert [r.getMessage().split()[0] for r in logged] == [e[0] for e in entries]
    # Operators see them in the audit view.
    operator = app.test_client()
    login_as(operator, "operator")
    page = operator.get("/admin/audit?action=security.").get_data(as_text=True)
    assert "security.bad_token" in page and "203.0.113.77" in page
