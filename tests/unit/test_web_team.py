"""A customer administrator's own users: invite (mail with the welcome
link), change role, remove, audited; never another customer's users."""

from __future__ import annotations

import re

import sqlalchemy as sa

from cloud.models import AuditEntry, Role, User
from tests.support.api import bearer, issue_tokens
from tests.support.web import PASSWORD, csrf_token, login, login_as, post_form


def actions(world, action):
    with world.session() as s:
        return s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        ).all()


def test_an_admin_invites_a_user_who_chooses_a_password_and_logs_in(app, client, world):
    login_as(client, "admin_a")
    page = client.get("/team").get_data(as_text=True)
    assert 'data-email="viewer@acme.test"' in page and "admin@beta.test" not in page
    invitee = {"email": "Tanaka@Acme.test", "name": "田中", "language": "ja"}
    r = post_form(client, "/team", data={**invitee, "role": "customer_viewer"})
    assert r.status_code == 302
    [mail] = app.extensions["mimamori_mailer"].sent
    assert mail.to == "tanaka@acme.test" and "/welcome/" in mail.body
    page = client.get("/team").get_data(as_text=True)
    assert "An invitation was mailed to tanaka@acme.test." in page
    assert "invited, not logged in yet" in page
    with world.session() as s:
        new = s.scalars(sa.select(User).where(User.email == "tanaka@acme.test")).one()
        assert (new.customer_id, new.role, new.language) == (
            world.ids["customer_a"],
            Role.CUSTOMER_VIEWER,
            "ja",
        )
    [entry] = actions(world, "user.invite")
    assert entry.customer_id == world.ids["customer_a"] and entry.actor == "admin@acme.test"
    post_form(client, "/", "/logout")
    link = re.search(r"http://localhost(/welcome/\S+)", mail.body).group(1)
    post_form(client, link, data={"new": "tanaka password 1", "confirm": "tanaka password 1"})
    assert login(client, "tanaka@acme.test", "tanaka password 1").status_code == 302
    assert client.get("/team").status_code == 403  # a viewer manages nobody


def test_roles_change_and_a_removed_user_is_out_at_once(app, world):
    admin, victim = app.test_client(), app.test_client()
    login_as(admin, "admin_a")
    login_as(victim, "viewer_a")
    token = issue_tokens(world)["viewer_a"]
    assert victim.get("/").status_code == 200
    vid = world.ids["viewer_a"]
    post_form(admin, "/team", f"/team/{vid}/role", data={"role": "customer_admin"})
    with world.session() as s:
        assert s.get(User, vid).role == Role.CUSTOMER_ADMIN
    [changed] = actions(world, "user.role")
    assert changed.details["before"] == "customer_viewer"
    assert changed.details["after"] == "customer_admin"
    post_form(admin, "/team", f"/team/{vid}/remove")
    assert "can no longer log in" in admin.get("/team").get_data(as_text=True)
    assert 'data-email="viewer@acme.test"' not in admin.get("/team").get_data(as_text=True)
    assert victim.get("/").status_code == 302  # the open session ends
    assert login(victim, "viewer@acme.test", PASSWORD).status_code != 302
    assert victim.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert len(actions(world, "user.remove")) == 1
    # Invited again: back, with a fresh password to choose (the old one is gone).
    post_form(
        admin, "/team",
        data={"email": "viewer@acme.test", "role": "customer_viewer", "language": "en"},
    )  # fmt: skip
    with world.session() as s:
        back = s.get(User, vid)
        assert back.active and back.role == Role.CUSTOMER_VIEWER
    assert login(victim, "viewer@acme.test", PASSWORD).status_code != 302
    assert actions(world, "user.invite")[-1].details["again"] is True


def test_admins_touch_only_their_own_customers_users(client, world):
    login_as(client, "admin_b")
    page = client.get("/team").get_data(as_text=True)
    assert "acme.test" not in page
    for action, data in (("role", {"role": "customer_viewer"}), ("remove", {})):
        for who in ("viewer_a", "admin_a", "operator"):
            r = post_form(client, "/team", f"/team/{world.ids[who]}/{action}", data=data)
            assert r.status_code == 404, (action, who)
    # Another customer's address (or staff's) cannot be taken, and whose it is stays unsaid.
    for email in ("viewer@acme.test", "op@mimamori.test"):
        r = post_form(
            client, "/team", data={"email": email, "role": "customer_viewer", "language": "en"}
        )
        assert r.status_code == 400 and f"{email} has an account already." in r.get_data(
            as_text=True
        )
    r = post_form(
        client, "/team", data={"email": "x@beta.test", "role": "operator", "language": "en"}
    )
    assert r.status_code == 400 and "Unknown role operator." in r.get_data(as_text=True)
    # Nobody changes or removes themself.
    me = world.ids["admin_b"]
    post_form(client, "/team", f"/team/{me}/role", data={"role": "customer_viewer"})
    assert "You cannot change or remove yourself." in client.get("/team").get_data(as_text=True)
    with world.session() as s:
        assert s.get(User, me).role == Role.CUSTOMER_ADMIN
        assert s.get(User, world.ids["viewer_a"]).active
        assert s.scalar(sa.select(sa.func.count()).select_from(User)) == 5
    assert actions(world, "user.role") == [] and actions(world, "user.remove") == []


def test_viewers_and_staff_have_no_users_page_here(client, world):
    for who in ("viewer_a", "operator", "installer"):
        login_as(client, who)
        assert client.get("/team").status_code == 403, who
        token = csrf_token(client, "/")
        r = client.post(f"/team/{world.ids['viewer_a']}/remove", data={"csrf_token": token})
        assert r.status_code == 403, who
        post_form(client, "/", "/logout")
