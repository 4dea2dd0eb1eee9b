"""The Firmware pages in Chromium as an operator uses them: upload a signed
bundle, start a rollout, watch the terminals' progress (the terminals' reports
are applied as the ingest applies them), on a desktop in English and on a
phone in Japanese."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from cloud.models import Connectivity, Terminal, User
from cloud.models.ota import OtaTarget
from cloud.services import ota
from tests.support.ota import PUBLIC, make_bundle
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


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Any, Any]]:
    path = migrate_template(tmp_path)
    world = build_world(f"sqlite:///{path}", now=datetime.now(UTC))
    with world.session() as s:
        for t in s.query(Terminal).filter(Terminal.id.in_(("TA1", "TB1"))):
            t.connectivity = Connectivity.ONLINE
        s.commit()
    app = make_app(world, clock=lambda: datetime.now(UTC), ota_keys=(PUBLIC,))
    with LiveServer(app) as server:
        yield server.url, world, app
    world.engine.dispose()


@pytest.mark.parametrize(
    ("viewport", "lang"), [((1366, 900), "en"), ((390, 844), "ja")], ids=["desktop-en", "phone-ja"]
)
def test_operator_uploads_rolls_out_and_watches_the_terminals(
    browser: Browser,
    site: tuple[str, Any, Any],
    viewport: tuple[int, int],
    lang: str,
    tmp_path: Path,
) -> None:
    base, world, app = site
    with world.session() as s:
        s.get(User, world.ids["operator"]).language = lang
        s.commit()
    context = browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        locale="en-US",
        is_mobile=viewport[0] < 500,
        has_touch=viewport[0] < 500,
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        submit_login(page, base, "operator", world)
        page.goto(f"{base}/ota")
        expect(page.locator("h1")).to_have_text(
            "Firmware updates" if lang == "en" else "ファームウェア更新"
        )
        archive = tmp_path / "update.tar"
        archive.write_bytes(make_bundle(tmp_path / "b"))
        page.set_input_files("#upload input[type=file]", str(archive))
        page.click("#upload button[type=submit]")
        expect(page.locator("#bundles")).to_contain_text("2.0.0")
        page.fill("#new-rollout textarea[name=terminals]", "TA1 TB1")
        page.fill("#new-rollout input[name=waves]", "1,100%")
        page.click("#new-rollout button[type=submit]")
        expect(page.locator("#targets tr[data-terminal]")).to_have_count(2)
        # the ingest's driver offers the first wave; the terminal reports its progress
        with world.session() as s:
            ota.advance(s, app.extensions["mimamori_publisher"], datetime.now(UTC))
            job = s.query(OtaTarget).filter_by(terminal_id="TA1").one().id
            frame = {"job": job, "state": "downloading", "done": 40, "total": 100, "reason": None}
            ota.record_status(s, "TA1", frame, datetime.now(UTC))
            s.commit()
        page.reload()
        row = page.locator('#targets tr[data-terminal="TA1"]')
        expect(row).to_contain_text("downloading" if lang == "en" else "ダウンロード中")
        expect(row.locator("progress")).to_have_attribute("value", "40")
        with world.session() as s:
            frame = dict(frame, state="confirmed", done=100)
            ota.record_status(s, "TA1", frame, datetime.now(UTC))
            s.commit()
        page.reload()
        expect(row).to_contain_text("confirmed" if lang == "en" else "確定")
        assert page_width(page) <= viewport[0]
    finally:
        context.close()
    assert errors == [], errors
