"""Sensor profiles in Chromium: a reference profile and test devices are marked
wherever a sensor's model is shown (the customer's terminal page and the
installer's terminal page), with the explanation reachable by a tap, on a
desktop in English and on a phone in Japanese."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from cloud.models import User
from tests.support.web import (
    LiveServer,
    build_world,
    make_app,
    migrate_template,
    page_width,
    submit_login,
)

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
SIZES = [((1280, 900), "en"), ((390, 844), "ja")]
WORDS = {
    "en": ("reference profile", "test device", "not a manufacturer's published map"),
    "ja": ("参考プロファイル", "テスト機器", "メーカーが公開したものではありません"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    path = migrate_template(tmp_path_factory.mktemp("sensors"))
    now = datetime.now(UTC)
    # TA1's birth named IM-100 (reference), PM-300 and TH-10 (test devices)
    world = build_world(f"sqlite:///{path}", now=now, samples=False)
    with LiveServer(make_app(world, clock=lambda: datetime.now(UTC))) as server:
        yield server.url, world
    world.engine.dispose()


@pytest.mark.parametrize(("who", "path"), [("viewer_a", "/terminals/TA1"),
                                           ("installer", "/admin/terminals/TA1")],
                         ids=["customer", "installer"])  # fmt: skip
@pytest.mark.parametrize(("size", "lang"), SIZES, ids=["desktop-en", "phone-ja"])
def test_reference_and_test_profiles_are_marked(
    *,
    browser: Browser,
    site: tuple[str, Any],
    who: str,
    path: str,
    size: tuple[int, int],
    lang: str,
    tmp_path: Path,
) -> None:
    base, world = site
    with world.session() as s:
        s.get(User, world.ids[who]).language = lang
        s.commit()
    phone = size[0] < 500
    context = browser.new_context(
        viewport={"width": size[0], "height": size[1]},
        locale="ja-JP" if lang == "ja" else "en-US",
        is_mobile=phone,
        has_touch=phone,
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    reference, test_device, hint = WORDS[lang]
    try:
        submit_login(page, base, who, world)
        page.goto(base + path)
        leak = page.locator('#sensors tr[data-device="leak1"]')
        expect(leak).to_contain_text("IM-100")
        badge = leak.locator("a.badge.profile")
        expect(badge).to_have_text(reference)
        expect(badge).to_have_attribute("title", re.compile(re.escape(hint)))
        expect(page.locator('#sensors tr[data-device="pm1"] a.badge')).to_have_text(test_device)
        # a phone has no tooltips: the badge leads to the explanation on the page
        badge.tap() if phone else badge.click()
        expect(page).to_have_url(f"{base}{path}#profile-kinds")
        kinds = page.locator("#profile-kinds")
        expect(kinds).to_be_in_viewport()
        expect(kinds).to_contain_text(hint)
        assert page_width(page) <= size[0]
        page.screenshot(path=str(tmp_path / "sensors.png"), full_page=True)
    finally:
        context.close()
    assert errors == [], errors
