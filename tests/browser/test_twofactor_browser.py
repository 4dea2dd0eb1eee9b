"""Two-step login in Chromium as an installer meets it: the first login ends
on the enrolment page (a QR code and the key as text), the code from the app
turns it on and shows the recovery codes once, and the next login asks for a
code. The test plays the authenticator app with pyotp."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pyotp
import pytest
from playwright.sync_api import Browser, expect

from cloud.models import User
from tests.support.web import (
    EMAILS,
    PASSWORD,
    LiveServer,
    build_world,
    make_app,
    migrate_template,
    page_width,
)

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
WORDS = {
    "en": {"enrol": "Set up two-step login", "codes": "Recovery codes", "code": "Two-step login"},
    "ja": {"enrol": "2段階認証の設定", "codes": "リカバリーコード", "code": "2段階認証"},
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    path = migrate_template(tmp_path_factory.mktemp("twofactor-browser"))
    world = build_world(f"sqlite:///{path}", now=datetime.now(UTC), samples=False)
    with LiveServer(make_app(world, clock=lambda: datetime.now(UTC))) as server:
        yield server.url, world
    world.engine.dispose()


@pytest.mark.parametrize(
    ("size", "lang"), [((1366, 900), "en"), ((390, 844), "ja")], ids=["desktop-en", "phone-ja"]
)
def test_an_installer_enrols_at_the_first_login_and_then_logs_in_with_a_code(
    browser: Browser, site: tuple[str, Any], size: tuple[int, int], lang: str
) -> None:
    base, world = site
    with world.session() as s:  # an installer from before two-step login
        user = s.get(User, world.ids["installer"])
        user.totp_secret = user.totp_enabled_at = user.totp_last_step = None
        user.language = lang
        s.commit()
    words = WORDS[lang]
    context = browser.new_context(
        locale="ja-JP" if lang == "ja" else "en-US",  # the code page comes before the user's
        viewport={"width": size[0], "height": size[1]},
        is_mobile=size[0] < 500,
        has_touch=size[0] < 500,
    )
    errors: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{base}/login")
        page.fill("input[name=email]", EMAILS["installer"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        # Nothing else is reachable before enrolling.
        page.wait_for_url(f"{base}/account/two-factor")
        page.goto(f"{base}/terminals/TA1")
        page.wait_for_url(f"{base}/account/two-factor")
        expect(page.locator("h1")).to_have_text(words["enrol"])
        qr = page.locator("img.qr")
        expect(qr).to_be_visible()
        box = qr.bounding_box()
        assert box is not None and box["width"] >= 150  # big enough to scan
        assert page_width(page) <= size[0]
        assert qr.evaluate("i => i.complete && i.naturalWidth > 0")  # the SVG rendered
        secret = page.locator("code.js-secret").inner_text().replace(" ", "")
        app = pyotp.TOTP(secret)
        page.fill("input[name=code]", app.now())
        page.click("button[type=submit].primary")
        expect(page.locator("h1")).to_have_text(words["codes"])
        codes = page.locator("ul.recovery-codes code")
        expect(codes).to_have_count(10)
        page.click("a.button.primary")
        expect(page.locator("#summary")).to_be_visible()

        # Log out; the next login asks for the code.
        if size[0] < 500:
            page.click(".menu-button")
        page.click("nav.menu button.link")
        page.wait_for_url(f"{base}/login")
        page.fill("input[name=email]", EMAILS["installer"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        page.wait_for_url(f"{base}/login/code")
        expect(page.locator("h1")).to_have_text(words["code"])
        # The code used to enrol is spent; the app's next one is good.
        page.fill("input[name=code]", app.at(datetime.now(UTC).timestamp() + 30))
        page.click("button[type=submit].primary")
        expect(page.locator("#summary")).to_be_visible()
    finally:
        context.close()
    assert errors == [], f"browser console errors: {errors}"
