"""Login, logout, throttling, password change and reset, sessions, CSRF, audit."""

from __future__ import annotations

import re
import threading

import sqlalchemy as sa

from cloud.models import Alarm, AuditEntry, User
from tests.support.web import (
    EMAILS,
    PASSWORD,
    csrf_token,
    login,
    login_as,
    post_form,
    sent_mail,
)


def audit_actions(world, action_prefix=""):
    with world.session() as s:
        return [
            (e.action, e.actor, e.ip)
            for e in s.scalars(
                sa.select(AuditEntry)
                .where(AuditEntry.action.startswith(action_prefix))
                .order_by(AuditEntry.id)
            )
        ]


def test_pages_need_login(client):
    for path in (
        "/",
        "/terminals/TA1",
        "/alarms",
        "/targets",
        "/forwarding",
        "/admin",
        "/terminals/TA1/series.json?channel=leak1.ior",
    ):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login?next=")


def test_login_lands_on_the_dashboard_and_is_audited(client, world):
    response = login(client, "ADMIN@acme.test ")  # case and spaces do not matter
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/").get_data(as_text=True)
    assert "Sub A" in page and "Sub B" not in page
    assert ("auth.login", "admin@acme.test", "127.0.0.1") in audit_actions(world, "auth.")


def test_wrong_password_is_refused_audited_and_counted(client, world):
    response = login(client, "admin@acme.test", "wrong password")
    assert response.status_code == 401
    assert "Wrong e-mail address or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302  # still logged out
    actions = audit_actions(world, "auth.login.failed")
    assert actions == [("auth.login.failed", "admin@acme.test", "127.0.0.1")]
    with world.session() as s:
        user = s.get(User, world.ids["admin_a"])
        assert user.failed_logins == 1 and user.locked_until is None


def test_unknown_account_gets_the_same_answer(client):
    unknown = login(client, "nobody@acme.test", "whatever pass")
    known = login(client, "admin@acme.test", "whatever pass")
    assert unknown.status_code == known.status_code == 401
    strip = re.compile(r'value="[^"]*"')
    assert strip.sub("", unknown.get_data(as_text=True)) == strip.sub(
        "", known.get_data(as_text=True)
    )


def test_next_parameter_only_redirects_within_the_site(client):
    token = csrf_token(client, "/login")
    for target, expected in (
        ("/alarms", "/alarms"),
        ("//evil.test/x", "/"),
        ("https://evil.test/", "/"),
        ("/\\evil.test", "/"),
    ):
        client.get("/logout")
        response = client.post(
            f"/login?next={target}",
            data={"csrf_token": token, "email": EMAILS["viewer_a"], "password": PASSWORD},
        )
        assert response.headers["Location"] == expected, target
        token = csrf_token(client, "/password")  # logged in now
        client.post("/logout", data={"csrf_token": token})
        token = csrf_token(client, "/login")


def test_logout_ends_the_session(client, world):
    login_as(client, "viewer_a")
    assert client.get("/").status_code == 200
    response = post_form(client, "/", "/logout")
    assert response.status_code == 302
    assert client.get("/").status_code == 302
    assert "auth.logout" in [a for a, _, _ in audit_actions(world, "auth.")]


def test_forms_without_csrf_token_are_refused(client, world):
    # Login form without the token: 400, no login.
    response = client.post("/login", data={"email": EMAILS["admin_a"], "password": PASSWORD})
    assert response.status_code == 400
    login_as(client, "admin_a")
    aid = world.ids["alarm_a"]
    for path, data in (
        (f"/alarms/{aid}/ack", {"comment": "x"}),
        ("/terminals/TA1/settings", {"heartbeat": "300"}),
        ("/targets", {"address": "x@acme.test"}),
        ("/logout", {}),
        ("/language", {"lang": "ja"}),
    ):
        assert client.post(path, data=data).status_code == 400, path
        wrong = client.post(path, data={**data, "csrf_token": "forged"})
        assert wrong.status_code == 400, path
    with world.session() as s:
        assert s.get(Alarm, aid).state == "raised"


def test_throttling_delays_the_attacker_not_the_owner(app, client, clock, world):
    """Failures from one address slow down that address for that account,
    exponentially; the owner from another address logs in at once; waiting
    always helps (nothing is locked for good)."""
    web = app.extensions["mimamori"].web
    attacker = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}}
    owner = app.test_client()
    free = web.login_free_failures
    for _ in range(free):
        assert login(client, EMAILS["admin_a"], "guess", **attacker).status_code == 401
    # The next attempt is refused without checking the password, with Retry-After.
    refused = login(client, EMAILS["admin_a"], PASSWORD, **attacker)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == web.login_base_delay_s
    # The owner, from their own address, is not slowed down at all.
    ok = login(owner, EMAILS["admin_a"], PASSWORD, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert ok.status_code == 302
    # Each further failure doubles the wait.
    waits = []
    for _ in range(4):
        clock.advance(web.login_max_delay_s)  # wait out the current delay
        assert login(client, EMAILS["admin_a"], "guess", **attacker).status_code == 401
        waits.append(
            int(login(client, EMAILS["admin_a"], "guess", **attacker).headers["Retry-After"])
        )
    assert waits == [web.login_base_delay_s * 2**k for k in range(1, 5)]
    # Refused attempts did not count: after the wait, the right password works.
    clock.advance(waits[-1])
    assert login(client, EMAILS["admin_a"], PASSWORD, **attacker).status_code == 302
    with world.session() as s:
        assert s.get(User, world.ids["admin_a"]).locked_until is None


def test_rotating_addresses_cannot_escape_the_account_limit_nor_lock_the_owner_out(app, clock):
    web = app.extensions["mimamori"].web
    owner = app.test_client()  # the owner's browser has logged in here before
    assert login(owner, EMAILS["admin_a"], PASSWORD).status_code == 302
    post_form(owner, "/", "/logout")
    bot = app.test_client()
    addresses = (f"203.0.113.{i}" for i in range(1, 250))

    def guess():
        return login(bot, EMAILS["admin_a"], "guess", environ_base={"REMOTE_ADDR": next(addresses)})

    for _ in range(web.login_account_free_failures):
        clock.advance(1)
        assert guess().status_code == 401
    # Every address was new, yet the account itself now asks for a pause...
    refused = guess()
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) == web.login_account_base_delay_s
    # ...that grows with every guess, but only up to a short cap.
    waits = []
    for _ in range(10):
        clock.advance(web.login_account_max_delay_s)
        assert guess().status_code == 401
        waits.append(int(guess().headers["Retry-After"]))
    assert waits[0] == 2 * web.login_account_base_delay_s
    assert max(waits) == web.login_account_max_delay_s == waits[-1]
    # The owner on a new device waits no longer than that cap...
    new_device = login(
        app.test_client(), EMAILS["admin_a"], PASSWORD, environ_base={"REMOTE_ADDR": "198.51.100.7"}
    )
    assert new_device.status_code == 429
    assert int(new_device.headers["Retry-After"]) <= web.login_account_max_delay_s
    # ...and on the browser that logged in before, not at all.
    assert login(owner, EMAILS["admin_a"], PASSWORD).status_code == 302


def test_an_address_spraying_many_accounts_is_refused_for_a_window(app, client, clock):
    web = app.extensions["mimamori"].web
    sprayer = {"environ_base": {"REMOTE_ADDR": "203.0.113.50"}}
    emails = [f"user{i}@acme.test" for i in range(web.login_ip_max_failures)]
    for i, email in enumerate(emails):
        clock.advance(1)
        assert login(client, email, "guess", **sprayer).status_code == 401, i
    refused = login(client, EMAILS["viewer_a"], PASSWORD, **sprayer)
    assert refused.status_code == 429
    retry = int(refused.headers["Retry-After"])
    assert 0 < retry <= web.login_ip_window_s
    # Another address is unaffected; the sprayer may try again after the window.
    assert login(app.test_client(), EMAILS["viewer_a"], PASSWORD).status_code == 302
    clock.advance(retry)
    assert login(client, EMAILS["viewer_a"], PASSWORD, **sprayer).status_code == 302


def test_password_change_ends_other_sessions(app, client, world):
    other = app.test_client()
    login_as(client, "viewer_a")
    login_as(other, "viewer_a")
    bad = post_form(
        client,
        "/password",
        data={"current": "wrong", "new": "new password 123", "confirm": "new password 123"},
    )
    assert bad.status_code == 200 and "The current password is wrong" in bad.get_data(as_text=True)
    short = post_form(
        client, "/password", data={"current": PASSWORD, "new": "short", "confirm": "short"}
    )
    assert "at least 10 characters" in short.get_data(as_text=True)
    response = post_form(
        client,
        "/password",
        data={"current": PASSWORD, "new": "new password 123", "confirm": "new password 123"},
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200  # this session was renewed
    assert other.get("/").status_code == 302  # the other one ended
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert login(client, EMAILS["viewer_a"], PASSWORD).status_code == 401
    assert login(client, EMAILS["viewer_a"], "new password 123").status_code == 302
    with world.session() as s:
        assert s.get(User, world.ids["viewer_a"]).password_hash.startswith("$argon2id$")
    assert "auth.password.change" in [a for a, _, _ in audit_actions(world, "auth.")]


def test_password_reset_by_mail_link_works_once_and_expires(app, client, clock, world):
    unknown = post_form(client, "/password/reset", data={"email": "nobody@acme.test"})
    known = post_form(client, "/password/reset", data={"email": EMAILS["viewer_a"]})
    # Same page either way; only the real account gets a mail.
    assert unknown.get_data(as_text=True).count("on its way") == 1
    assert known.get_data(as_text=True).count("on its way") == 1
    assert [m.to for m in sent_mail(app)] == [EMAILS["viewer_a"]]
    link = re.search(r"http://localhost(/password/reset/\S+)", sent_mail(app)[0].body).group(1)
    assert "60 minutes" in sent_mail(app)[0].body
    response = post_form(client, link, data={"new": "brand new pass", "confirm": "brand new pass"})
    assert response.status_code == 302
    assert login(client, EMAILS["viewer_a"], "brand new pass").status_code == 302
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    # The link is used up (the password changed since it was made).
    assert client.get(link).status_code == 400
    # A new link expires after the configured age.
    post_form(client, "/password/reset", data={"email": EMAILS["viewer_a"]})
    link2 = re.search(r"http://localhost(/password/reset/\S+)", sent_mail(app)[-1].body).group(1)
    assert client.get(link2).status_code == 200
    assert client.get(link2[:-5] + "xxxxx").status_code == 400  # tampered
    clock.advance(app.extensions["mimamori"].web.reset_token_max_age_s + 1)
    expired = client.get(link2)
    assert expired.status_code == 400 and "expired" in expired.get_data(as_text=True)
    assert ("auth.password.reset", EMAILS["viewer_a"], "127.0.0.1") in audit_actions(
        world, "auth.password.reset"
    )


def test_a_new_user_is_invited_not_told_of_a_reset(app, client, clock, world):
    login_as(client, "operator")
    made = post_form(
        client,
        "/admin/users",
        data={"email": "new.op@acme.test", "role": "operator", "language": "en", "active": "1"},
    )
    assert made.status_code == 302
    post_form(client, "/", "/logout")
    [mail] = app.extensions["mimamori_mailer"].sent
    assert mail.to == "new.op@acme.test" and mail.subject == "mimamori: your new account"
    assert "was created for you" in mail.body and "within 7 days" in mail.body
    assert "reset" not in (mail.subject + mail.body).lower()
    link = re.search(r"http://localhost(/welcome/\S+)", mail.body).group(1)
    # An invitation is no reset link, and it outlives one.
    assert client.get(link.replace("/welcome/", "/password/reset/")).status_code == 400
    clock.advance(app.extensions["mimamori"].web.reset_token_max_age_s * 24)
    page = client.get(link)
    assert page.status_code == 200 and "Welcome: choose your password" in page.get_data(
        as_text=True
    )
    done = post_form(client, link, data={"new": "first password 1", "confirm": "first password 1"})
    assert done.status_code == 302
    assert login(client, "new.op@acme.test", "first password 1").status_code == 302
    assert client.get(link).status_code == 400  # used up


def test_a_reset_request_does_the_same_work_for_known_and_unknown_addresses(app, client):
    # The mail server is slow (here: it waits for the test). If the request
    # waited for it, a known address would answer measurably later than an
    # unknown one: the page would tell who has an account.
    gate = threading.Event()
    recording = app.extensions["mimamori_mailer"]

    class SlowMailer:
        def send(self, to, subject, body):
            gate.wait(30)
            recording.send(to, subject, body)

    app.extensions["mimamori_mailer"] = SlowMailer()
    answers = {}

    def ask(email):
        answers[email] = post_form(client, "/password/reset", data={"email": email})

    for email in (EMAILS["viewer_a"], "nobody@acme.test"):
        asking = threading.Thread(target=ask, args=(email,))
        asking.start()
        asking.join(10)
        assert not asking.is_alive(), f"the reset page waited for the mail server ({email})"
    gate.set()
    assert {a.status_code for a in answers.values()} == {200}
    assert app.extensions["mimamori_reset_mails"].join(10)
    assert [m.to for m in recording.sent] == [EMAILS["viewer_a"]]


def test_reset_mail_is_in_the_users_language(app, client, world):
    with world.session() as s:
        s.get(User, world.ids["viewer_a"]).language = "ja"
        s.commit()
    post_form(client, "/password/reset", data={"email": EMAILS["viewer_a"]})
    mail = sent_mail(app)[-1]
    assert "パスワード" in mail.subject


def test_reset_mails_are_limited_per_account(app, client):
    for _ in range(5):
        post_form(client, "/password/reset", data={"email": EMAILS["viewer_a"]})
    assert len(sent_mail(app)) == 3


def test_inactive_user_cannot_log_in_and_loses_sessions(app, client, world):
    login_as(client, "viewer_a")
    with world.session() as s:
        s.get(User, world.ids["viewer_a"]).active = False
        s.commit()
    assert client.get("/").status_code == 302
    assert login(app.test_client(), EMAILS["viewer_a"]).status_code == 401


def session_cookie(client):
    cookie = client.get_cookie("mimamori_session")
    assert cookie is not None
    return cookie.value


def test_logout_ends_the_session_on_the_server_not_just_in_the_browser(app, client):
    login_as(client, "viewer_a")
    stolen = session_cookie(client)  # a copy, say from a shared PC's profile
    post_form(client, "/", "/logout")
    thief = app.test_client()
    thief.set_cookie("mimamori_session", stolen)
    response = thief.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_session_ends_after_its_absolute_lifetime_however_busy(app, client, clock):
    web = app.extensions["mimamori"].web
    login_as(client, "viewer_a")
    for _ in range(web.session_absolute_s // 3600 - 1):
        clock.advance(3600)  # in use every hour: the idle timeout never strikes
        assert client.get("/").status_code == 200
    clock.advance(3600 + 1)
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
