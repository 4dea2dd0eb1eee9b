"""API authentication: bearer tokens only, made and revoked by their owner
with the site session + CSRF token, stored as hashes, dead when revoked or
when the user is deactivated; the site's session cookie never authenticates."""

from __future__ import annotations

from typing import Any

from cloud.api.auth import token_hash
from cloud.models import User
from cloud.services.accounts import make_reset_token
from tests.support.api import bearer, issue_tokens
from tests.support.web import PASSWORD, csrf_token, login_as, post_form


def test_session_cookie_alone_does_not_authenticate(client: Any) -> None:
    login_as(client, "admin_a")
    assert client.get("/targets").status_code == 200  # the site session works
    r = client.get("/api/v1/terminals")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "unauthorized"
    # Nor for a write with the page's CSRF token: the API does not look at sessions.
    token = csrf_token(client, "/targets")
    r = client.post(
        "/api/v1/targets",
        json={"channel": "email", "address": "x@acme.test"},
        headers={"X-CSRFToken": token},
    )
    assert r.status_code == 401


def test_api_writes_need_no_csrf_token(client: Any, world: Any) -> None:
    token = issue_tokens(world)["admin_a"]
    r = client.post(
        "/api/v1/targets",
        json={"channel": "email", "address": "x@acme.test"},
        headers=bearer(token),
    )
    assert r.status_code == 201, r.get_json()


def test_owner_makes_token_with_session_and_csrf(client: Any, world: Any) -> None:
    login_as(client, "viewer_a")
    csrf = csrf_token(client, "/alarms")
    again = {"password": PASSWORD}  # minting asks for the password again
    made = client.post("/api/v1/token", headers={"X-CSRFToken": csrf}, json=again)
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    token = made.get_json()["token"]
    with world.session() as s:
        user = s.get(User, world.ids["viewer_a"])
        assert user is not None and user.api_token_hash == token_hash(token)
        assert token not in user.api_token_hash
    fresh = client.application.test_client()  # no cookies at all
    me = fresh.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200 and me.get_json()["email"] == "viewer@acme.test"
    # A second token replaces the first.
    second = client.post("/api/v1/token", headers={"X-CSRFToken": csrf}, json=again).get_json()[
        "token"
    ]
    assert fresh.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert fresh.get("/api/v1/me", headers=bearer(second)).status_code == 200
    # Revoked: gone.
    assert client.delete("/api/v1/token", headers={"X-CSRFToken": csrf}).status_code == 204
    assert fresh.get("/api/v1/me", headers=bearer(second)).status_code == 401


def test_token_actions_refuse_without_csrf_or_session(client: Any) -> None:
    login_as(client, "viewer_a")
    r = client.post("/api/v1/token")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "csrf"
    anonymous = client.application.test_client()
    assert anonymous.post("/api/v1/token").status_code == 400


def test_deactivated_user_token_stops_working(client: Any, world: Any) -> None:
    token = issue_tokens(world)["admin_a"]
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    with world.session() as s:
        user = s.get(User, world.ids["admin_a"])
        assert user is not None
        user.active = False
        s.commit()
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_openapi_document_is_public_and_lists_operations(client: Any) -> None:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"][0]["url"].endswith("/api/v1")
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ("POST", "/alarms/{alarm_id}/acknowledge") in ops
    assert ("POST", "/terminals/{tid}/provision") in ops
    assert ("GET", "/terminals/{tid}/samples") in ops
    assert ("GET", "/forwarding-endpoints/{endpoint_id}") in ops
    # Every documented path is served (401 without a token, never 404/405).
    for method, path in ops:
        concrete = (
            path.replace("{tid}", "TA1")
            .replace("{alarm_id}", "1")
            .replace("{target_id}", "1")
            .replace("{rule_id}", "1")
            .replace("{command_id}", "1")
            .replace("{rollout_id}", "1")
            .replace("{window_id}", "1")
            .replace("{endpoint_id}", "1")
        )
        answer = client.open("/api/v1" + concrete, method=method)
        assert answer.status_code == 401, (method, path, answer.status_code)


def test_token_page_makes_shows_once_and_revokes(client: Any, world: Any) -> None:
    assert client.get("/api/v1/token").status_code == 302  # login first
    login_as(client, "admin_a")
    page = client.get("/api/v1/token")
    assert page.status_code == 200 and "You have no token." in page.get_data(as_text=True)
    csrf = csrf_token(client, "/api/v1/token")
    wrong = client.post("/api/v1/token", data={"csrf_token": csrf, "password": "nope"})
    assert wrong.status_code == 403 and "The password is wrong." in wrong.get_data(as_text=True)
    made = client.post("/api/v1/token", data={"csrf_token": csrf, "password": PASSWORD})
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    text = made.get_data(as_text=True)
    token = text.split('<code class="js-token">')[1].split("</code>")[0]
    with world.session() as s:
        user = s.get(User, world.ids["admin_a"])
        assert user is not None and user.api_token_hash == token_hash(token)
    assert token not in client.get("/api/v1/token").get_data(as_text=True)  # shown once
    fresh = client.application.test_client()
    assert fresh.get("/api/v1/me", headers=bearer(token)).status_code == 200
    gone = client.post("/api/v1/token/revoke", data={"csrf_token": csrf})
    assert gone.status_code == 302
    assert fresh.get("/api/v1/me", headers=bearer(token)).status_code == 401
    assert client.post("/api/v1/token/revoke", data={}).status_code == 400  # no CSRF token


def make_token(client: Any, password: str = PASSWORD) -> Any:
    csrf = csrf_token(client, "/alarms")
    return client.post("/api/v1/token", headers={"X-CSRFToken": csrf}, json={"password": password})


def test_minting_a_token_asks_for_the_password_again(client: Any) -> None:
    login_as(client, "viewer_a")  # a session left open on a shared PC is not enough
    csrf = csrf_token(client, "/alarms")
    assert client.post("/api/v1/token", headers={"X-CSRFToken": csrf}).status_code == 403
    assert make_token(client, "not the password").status_code == 403
    assert make_token(client).status_code == 201


def test_a_password_change_or_reset_revokes_the_token(app: Any, client: Any, world: Any) -> None:
    login_as(client, "viewer_a")
    token = make_token(client).get_json()["token"]
    api = app.test_client()
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 200
    changed = post_form(
        client,
        "/password",
        data={"current": PASSWORD, "new": "a new password 1", "confirm": "a new password 1"},
    )
    assert changed.status_code == 302
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401
    token = make_token(client, "a new password 1").get_json()["token"]
    with world.session() as s:  # a reset (through the mailed link) does it too
        user = s.get(User, world.ids["viewer_a"])
        link = make_reset_token(app.config["SECRET_KEY"], user, app.extensions["mimamori"].clock())
    reset = post_form(
        client.application.test_client(),
        f"/password/reset/{link}",
        data={"new": "another password 2", "confirm": "another password 2"},
    )
    assert reset.status_code == 302
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_tokens_expire_and_show_when_they_were_last_used(app: Any, client: Any, clock: Any) -> None:
    login_as(client, "viewer_a")
    token = make_token(client).get_json()["token"]
    page = client.get("/api/v1/token").get_data(as_text=True)
    assert "Never used" in page and "Expires" in page
    clock.advance(3600)
    api = app.test_client()
    assert api.get("/api/v1/me", headers=bearer(token)).status_code == 200
    page = client.get("/api/v1/token").get_data(as_text=True)
    assert "Never used" not in page and "Last used" in page
    clock.advance(90 * 86400)  # the default lifetime
    gone = api.get("/api/v1/me", headers=bearer(token))
    assert gone.status_code == 401 and "expired" in gone.get_json()["error"]["message"]
