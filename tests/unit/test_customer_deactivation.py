"""Deactivating a customer stops its web sessions, API tokens, forwarding and
notifications and suspends its terminals; reactivating restores what it
stopped (docs/security.md, cloud.services.customer_status)."""

from __future__ import annotations

import sqlalchemy as sa

from cloud import forwarding
from cloud.models import (
    AuditEntry,
    Customer,
    Delivery,
    DeliveryStatus,
    Severity,
    Terminal,
    TerminalStatus,
    User,
)
from cloud.notify import targets
from cloud.services import admin
from cloud.services.scope import Viewer
from tests.support.web import EMAILS, PASSWORD, csrf_token, login, login_as, post_form, sent_mail

FORM = {"name": "Acme Denki", "timezone": "Asia/Tokyo", "language": "ja"}


def set_active(client, world, active: bool) -> None:
    path = f"/admin/customers/{world.ids['customer_a']}"
    answer = post_form(client, path, data=FORM | ({"active": "1"} if active else {}))
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]


def test_deactivation_stops_everything_of_the_customer_and_reactivation_restores_it(
    app, world, clock
):
    customer = login_as(app.test_client(), "admin_a")
    headers = {"X-CSRFToken": csrf_token(customer, "/api/v1/token")}
    token = customer.post("/api/v1/token", json={"password": PASSWORD}, headers=headers)
    bearer = {"Authorization": f"Bearer {token.get_json()['token']}"}
    api = app.test_client()
    assert api.get("/api/v1/terminals", headers=bearer).status_code == 200
    with world.session() as s:
        # A second terminal the operator suspended for a reason of their own,
        # and a mail still waiting in the outbox.
        s.add(Terminal(id="TA2", customer_id=world.ids["customer_a"], name="Spare"))
        s.flush()
        admin.set_status(
            s, Viewer.of(s.get(User, world.ids["operator"])), "TA2", "suspended",
            reason="site closed", now=clock(), ip=None,
        )  # fmt: skip
        queued = s.scalars(
            sa.select(Delivery).where(Delivery.customer_id == world.ids["customer_a"])
        ).one()
        queued.status = DeliveryStatus.QUEUED
        s.commit()

    operator = login_as(app.test_client(), "operator")
    set_active(operator, world, False)

    # Web: the open session is over, and logging in again fails.
    assert customer.get("/").status_code == 302
    assert login(app.test_client(), EMAILS["viewer_a"]).status_code == 401
    # API: the token is refused.
    assert api.get("/api/v1/terminals", headers=bearer).status_code == 401
    with world.session() as s:
        # Terminals: suspended (the broker reconciler disables the accounts).
        assert s.get(Terminal, "TA1").status == TerminalStatus.SUSPENDED
        # Notifications: nobody is paged for new alarms; the queued mail is given up.
        a = s.get(Customer, world.ids["customer_a"])
        assert targets.resolve(s, a, "TA1", "leak", Severity.ALARM) == []
        row = s.get(Delivery, queued.id)
        assert row.status == DeliveryStatus.DEAD and row.last_error == "customer deactivated"
        # Forwarding: the endpoints take nothing.
        assert forwarding.endpoints_for(s, s.get(Terminal, "TA1")) == []
        # The other customer is untouched.
        assert s.get(Terminal, "TB1").status == TerminalStatus.ACTIVE
        details = s.scalars(
            sa.select(AuditEntry.details).where(AuditEntry.action == "customer.update")
        ).one()
    assert details["suspended"] == 1 and details["deliveries_given_up"] == 1
    assert details["sessions_ended"] >= 1

    set_active(operator, world, True)
    with world.session() as s:
        assert s.get(Terminal, "TA1").status == TerminalStatus.ACTIVE
        # The operator's own suspension stays.
        assert s.get(Terminal, "TA2").status == TerminalStatus.SUSPENDED
        a = s.get(Customer, world.ids["customer_a"])
        assert [r.address for r in targets.resolve(s, a, "TA1", "leak", Severity.ALARM)] == [
            "duty@acme.test"
        ]
        assert [e.name for e in forwarding.endpoints_for(s, s.get(Terminal, "TA1"))] == [
            "Acme server"
        ]
        assert s.get(Delivery, queued.id).status == DeliveryStatus.DEAD  # old news stays unsent
    # The token works again; the ended session stays ended, a new login works.
    assert api.get("/api/v1/terminals", headers=bearer).status_code == 200
    assert customer.get("/").status_code == 302
    assert login(app.test_client(), EMAILS["viewer_a"]).status_code == 302


def test_a_deactivated_customers_user_gets_no_reset_mail(app, client, world):
    with world.session() as s:
        s.get(Customer, world.ids["customer_a"]).active = False
        s.commit()
    post_form(client, "/password/reset", data={"email": EMAILS["viewer_a"]})
    assert [m for m in sent_mail(app) if m.to == EMAILS["viewer_a"]] == []
