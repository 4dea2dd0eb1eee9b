"""Two-step login (TOTP, RFC 6238): required for staff, optional for customers,
recovery codes, replays refused, throttled and audited like passwords."""

from __future__ import annotations

import hashlib
import re

import pyotp
import sqlalchemy as sa

from cloud.models import AuditEntry, RecoveryCode, User
from tests.support.web import (
    EMAILS,
    PASSWORD,
    TOTP_SECRETS,
    csrf_token,
    login,
    login_as,
    post_form,
)

SECRET_TEXT = re.compile(r'<code class="js-secret">([A-Z2-7 ]+)</code>')
RECOVERY = re.compile(r"<li><code>([A-Z2-7]{4}(?:-[A-Z2-7]{4}){3})</code></li>")


def code_of(secret: str, clock) -> str:
    return str(pyotp.TOTP(secret).at(clock()))


def forget_secret(world, who: str) -> None:
    """As after the migration: the account has no second factor yet."""
    with world.session() as s:
        user = s.get(User, world.ids[who])
        user.totp_secret = user.totp_enabled_at = None
        s.commit()


def enrol(client, clock) -> tuple[str, list[str]]:
    """Set up two factors on the enrolment page; (secret, recovery codes)."""
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in page  # the QR code, drawn here
    secret = SECRET_TEXT.search(page).group(1).replace(" ", "")
    done = post_form(client, "/account/two-factor", data={"code": code_of(secret, clock)})
    assert done.status_code == 200, done.get_data(as_text=True)[:300]
    return secret, RECOVERY.findall(done.get_data(as_text=True))


def test_staff_must_enrol_before_reaching_anything_else(app, client, world, clock):
    forget_secret(world, "installer")
    assert login(client, EMAILS["installer"]).status_code == 302
    for path in ("/", "/terminals/TA1", "/admin", "/api/v1/token"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"].endswith(
            "/account/two-factor"
        ), path
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "Your role requires two-step login" in page
    # The key as text, the same as in the QR code's otpauth URI.
    secret = SECRET_TEXT.search(page).group(1).replace(" ", "")
    assert len(secret) == 32
    # A wrong code does not turn it on.
    wrong = post_form(client, "/account/two-factor", data={"code": "000000"})
    assert wrong.status_code == 400 and client.get("/").status_code == 302
    clock.advance(30)
    done = post_form(client, "/account/two-factor", data={"code": code_of(secret, clock)})
    codes = RECOVERY.findall(done.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/").status_code == 200
    with world.session() as s:
        stored = s.scalars(
            sa.select(RecoveryCode.code_hash).where(RecoveryCode.user_id == world.ids["installer"])
        ).all()
        actions = s.scalars(sa.select(AuditEntry.action)).all()
    # Hashed: no code is in the database as it was shown.
    assert sorted(stored) == sorted(
        hashlib.sha256(c.replace("-", "").encode()).hexdigest() for c in codes
    )
    assert "auth.2fa.enable" in actions


def test_an_enrolled_login_needs_the_code_and_a_code_is_good_once(app, client, world, clock):
    first = login(client, EMAILS["operator"])
    assert first.headers["Location"].endswith("/login/code")
    # The password alone logs nobody in.
    assert client.get("/").status_code == 302
    wrong = post_form(client, "/login/code", data={"code": "123456"})
    assert wrong.status_code == 401 and "wrong or was used" in wrong.get_data(as_text=True)
    code = code_of(TOTP_SECRETS["operator"], clock)
    ok = post_form(client, "/login/code", data={"code": code})
    assert ok.status_code == 302 and client.get("/").status_code == 200
    # Someone who saw that code (and knows the password) cannot use it again
    # within its window.
    other = app.test_client()
    login(other, EMAILS["operator"])
    replay = post_form(other, "/login/code", data={"code": code})
    assert replay.status_code == 401 and other.get("/").status_code == 302
    # The next step's code is good (the clock moved on).
    clock.advance(30)
    fresh = post_form(other, "/login/code", data={"code": code_of(TOTP_SECRETS["operator"], clock)})
    assert fresh.status_code == 302 and other.get("/").status_code == 200


def test_the_code_page_forgets_a_password_step_after_five_minutes(app, client, clock):
    login(client, EMAILS["operator"])
    clock.advance(301)
    stale = post_form(client, "/login", "/login/code", data={"code": "000000"})
    assert stale.status_code == 302 and stale.headers["Location"].endswith("/login")


def test_a_recovery_code_logs_in_once(app, world, clock):
    forget_secret(world, "operator")
    setup = app.test_client()
    login(setup, EMAILS["operator"])
    _, codes = enrol(setup, clock)
    one = codes[3]
    client = app.test_client()
    login(client, EMAILS["operator"])
    used = post_form(client, "/login/code", data={"code": one.lower().replace("-", " ")})
    assert used.status_code == 302 and client.get("/").status_code == 200
    again = app.test_client()
    login(again, EMAILS["operator"])
    assert post_form(again, "/login/code", data={"code": one}).status_code == 401
    status = client.get("/account/two-factor").get_data(as_text=True)
    assert "Recovery codes left: 9" in status
    with world.session() as s:
        actions = s.scalars(sa.select(AuditEntry.action)).all()
    assert "auth.2fa.recovery_used" in actions


def test_wrong_codes_are_throttled_like_passwords_and_audited(app, client, world, clock):
    login(client, EMAILS["operator"])
    for _ in range(3):
        assert post_form(client, "/login/code", data={"code": "000000"}).status_code == 401
    refused = post_form(
        client, "/login/code", data={"code": code_of(TOTP_SECRETS["operator"], clock)}
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    with world.session() as s:
        failed = s.scalars(
            sa.select(AuditEntry.details).where(AuditEntry.action == "auth.login.failed")
        ).all()
    assert [d["factor"] for d in failed] == ["totp"] * 3
    # Waiting helps; the good code then logs in.
    clock.advance(int(refused.headers["Retry-After"]))
    assert (
        post_form(
            client, "/login/code", data={"code": code_of(TOTP_SECRETS["operator"], clock)}
        ).status_code
        == 302
    )


def test_customers_choose_and_may_turn_it_off(app, client, world, clock):
    # Optional: a customer logs in with the password alone.
    login_as(client, "admin_a")
    assert client.get("/").status_code == 200
    secret, _ = enrol(client, clock)
    post_form(client, "/", "/logout")
    assert login(client, EMAILS["admin_a"]).headers["Location"].endswith("/login/code")
    clock.advance(30)
    post_form(client, "/login/code", data={"code": code_of(secret, clock)})
    assert client.get("/").status_code == 200
    # Turning it off asks for the password and a code.
    clock.advance(30)
    bad = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/off",
        data={"password": "wrong password", "code": code_of(secret, clock)},
    )
    assert bad.status_code == 403
    off = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/off",
        data={"password": PASSWORD, "code": code_of(secret, clock)},
    )
    assert off.status_code == 302
    post_form(client, "/", "/logout")
    assert login(client, EMAILS["admin_a"]).headers["Location"] == "/"


def test_staff_may_not_turn_it_off(app, client, clock):
    login_as(client, "operator")
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "Turn off two-step login" not in page
    clock.advance(30)
    refused = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/off",
        data={"password": PASSWORD, "code": code_of(TOTP_SECRETS["operator"], clock)},
    )
    assert refused.status_code == 403
    post_form(client, "/", "/logout")
    assert login(client, EMAILS["operator"]).headers["Location"].endswith("/login/code")


def test_new_recovery_codes_replace_the_old_ones(app, client, world, clock):
    forget_secret(world, "installer")
    login(client, EMAILS["installer"])
    secret, old = enrol(client, clock)
    clock.advance(30)
    page = post_form(
        client,
        "/account/two-factor",
        "/account/two-factor/recovery-codes",
        data={"code": code_of(secret, clock)},
    )
    new = RECOVERY.findall(page.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    other = app.test_client()
    login(other, EMAILS["installer"])
    assert post_form(other, "/login/code", data={"code": old[0]}).status_code == 401
    assert post_form(other, "/login/code", data={"code": new[0]}).status_code == 302


def test_minting_an_api_token_asks_for_the_code_too(app, client, clock):
    login_as(client, "operator")
    token = csrf_token(client, "/api/v1/token")
    headers = {"X-CSRFToken": token}
    without = client.post("/api/v1/token", json={"password": PASSWORD}, headers=headers)
    assert without.status_code == 403
    clock.advance(30)
    code = code_of(TOTP_SECRETS["operator"], clock)
    made = client.post("/api/v1/token", json={"password": PASSWORD, "code": code}, headers=headers)
    assert made.status_code == 201 and made.get_json()["token"].startswith("mm_")
    # Bearer calls need no code.
    api = app.test_client()
    listed = api.get(
        "/api/v1/terminals", headers={"Authorization": f"Bearer {made.get_json()['token']}"}
    )
    assert listed.status_code == 200


def test_an_operator_resets_a_lost_second_factor(app, client, world, clock):
    login_as(client, "operator")
    installer = world.ids["installer"]
    assert "Reset two-step login" in client.get(f"/admin/users/{installer}").get_data(as_text=True)
    done = post_form(
        client, f"/admin/users/{installer}", f"/admin/users/{installer}/two-factor/reset"
    )
    assert done.status_code == 302
    # The installer sets it up again at the next login.
    other = app.test_client()
    assert login(other, EMAILS["installer"]).headers["Location"] == "/"
    assert other.get("/").headers["Location"].endswith("/account/two-factor")
    # Nobody resets their own (that would be turning it off).
    own = post_form(
        client,
        f"/admin/users/{world.ids['operator']}",
        f"/admin/users/{world.ids['operator']}/two-factor/reset",
    )
    assert own.status_code == 400
    with world.session() as s:
        resets = s.scalars(
            sa.select(AuditEntry.object_id).where(AuditEntry.action == "auth.2fa.disable")
        ).all()
    assert resets == [str(installer)]
