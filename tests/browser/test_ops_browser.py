"""The operator's and the customer administrator's pages in Chromium, at a
desktop (1366x900) and a phone (390x844) size, in English and Japanese:
price list and billing, the operations console, reports and exports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from cloud.models import (
    Connectivity,
    Customer,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    Terminal,
    User,
    utcnow,
)
from cloud.models.ops import Price
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
SIZES = {"desktop": (1366, 900), "phone": (390, 844)}
CASES = [("desktop", "en"), ("phone", "ja")]
IDS = ["desktop-en", "phone-ja"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    directory = tmp_path_factory.mktemp("ops-browser")
    path = migrate_template(directory)
    world = build_world(f"sqlite:///{path}", now=datetime.now(UTC), samples=False)
    with LiveServer(make_app(world, clock=utcnow)) as server:
        yield server.url, world
    world.engine.dispose()


@pytest.fixture
def open_page(browser: Browser, site: tuple[str, Any]) -> Iterator[Callable[..., Page]]:
    """``open_page(who, size, lang)``: a logged-in page; console errors fail the test."""
    base, world = site
    contexts, errors = [], []

    def open_(who: str, size: str, lang: str) -> Page:
        with world.session() as s:
            s.get(User, world.ids[who]).language = lang
            s.commit()
        width, height = SIZES[size]
        context = browser.new_context(
            viewport={"width": width, "height": height},
            is_mobile=size == "phone",
            has_touch=size == "phone",
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        submit_login(page, base, who, world)
        page.wait_for_url(f"{base}/")
        return page

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"browser console errors: {errors}"


def fits(page: Page) -> None:
    """Nothing wider than the screen (tables scroll inside their own box)."""
    width = page.viewport_size["width"]
    assert page_width(page) <= width


@pytest.mark.parametrize(("size", "lang"), CASES, ids=IDS)
def test_operator_sets_a_price_from_next_month(open_page, site, size, lang):
    base, world = site
    page = open_page("operator", size, lang)
    page.goto(f"{base}/admin/prices")
    row = page.locator('#price-list tr[data-item="insulation"]')
    name = (
        "絶縁監視メール通報サービス" if lang == "ja" else "Insulation monitoring with mail alerts"
    )
    expect(row).to_contain_text(name)
    expect(row).to_contain_text("¥780")
    fits(page)
    price = "800" if size == "desktop" else "810"
    page.select_option("#price-form select[name=item]", "insulation")
    page.fill("#price-form input[name=unit_price]", price)
    # The month field is filled with next month already.
    month = page.input_value("#price-form input[name=effective_from]")
    page.click("#price-form button[type=submit]")
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(row).to_contain_text(f"¥{price}")
    expect(row).to_contain_text(month)
    expect(row).to_contain_text("¥780")  # today's price is untouched
    with world.session() as s:
        stored = s.query(Price).filter_by(item="insulation", unit_price=int(price)).one()
        assert stored.effective_from == date.fromisoformat(f"{month}-01")
        assert stored.effective_from > datetime.now(UTC).date()


@pytest.mark.parametrize(("size", "lang"), CASES, ids=IDS)
def test_billing_shows_the_month_so_far_item_by_item(open_page, site, size, lang):
    base, world = site
    page = open_page("admin_a", size, lang)
    page.goto(f"{base}/billing")
    lines = page.locator("#draft-lines")
    # Customer A's language is Japanese: its invoice lines are too.
    expect(lines.locator('tr[data-item="insulation"]')).to_contain_text(
        "絶縁監視メール通報サービス 月額 TA1 Sub A"
    )
    expect(lines.locator('tr[data-item="insulation"]')).to_contain_text("¥780")
    expect(lines.locator('tr[data-item="power"]')).to_contain_text("¥980")
    expect(lines.locator("tfoot tr.total")).to_contain_text("¥")
    fits(page)
    # Operators pick the customer.
    page = open_page("operator", size, lang)
    page.goto(f"{base}/billing")
    page.select_option("select[name=customer]", str(world.ids["customer_a"]))
    expect(page.locator('#draft-lines tr[data-item="insulation"]')).to_be_visible()
    fits(page)


@pytest.mark.parametrize(("size", "lang"), CASES, ids=IDS)
def test_operator_console_says_what_needs_attention_and_requeues(open_page, site, size, lang):
    base, world = site
    now = utcnow()
    with world.session() as s:
        ta1 = s.get(Terminal, "TA1")
        ta1.connectivity, ta1.last_seen_at = Connectivity.ONLINE, now - timedelta(minutes=30)
        s.add(
            Delivery(
                customer_id=world.ids["customer_a"], event="raised", dedup_key=f"dead-{size}",
                channel=DeliveryChannel.EMAIL, recipient=f"gone-{size}@acme.test", payload={},
                status=DeliveryStatus.DEAD, attempts=8, next_attempt_at=None,
                last_error="550 mailbox unavailable",
            )
        )  # fmt: skip
        s.commit()
        dead_id = s.scalar(sa.select(Delivery.id).where(Delivery.dedup_key == f"dead-{size}"))
    page = open_page("operator", size, lang)
    page.goto(f"{base}/admin")
    expect(page.locator("h1")).to_have_text(
        "運用コンソール" if lang == "ja" else "Operations console"
    )
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-healthy", "false")
    expect(verdict).to_contain_text(
        "1 台がハートビート間隔を超えて" if lang == "ja" else "1 silent"
    )
    # On a phone the verdict and the summary come first, above the fold.
    box = verdict.bounding_box()
    assert box is not None and box["y"] < page.viewport_size["height"]
    expect(page.locator('#silent-terminals tr[data-terminal="TA1"]')).to_be_visible()
    fits(page)
    row = page.locator(f'#dead-list tr[data-delivery="{dead_id}"]')
    expect(row).to_contain_text("550 mailbox unavailable")
    row.locator("button").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(row).to_have_count(0)
    with world.session() as s:
        assert s.get(Delivery, dead_id).status == DeliveryStatus.QUEUED


@pytest.mark.parametrize(("size", "lang"), CASES, ids=IDS)
def test_customer_downloads_reports_and_alarm_history_and_chooses_recipients(
    open_page, site, size, lang
):
    base, world = site
    page = open_page("admin_a", size, lang)
    page.goto(f"{base}/reports")
    expect(page.locator("h1")).to_have_text("月次報告書" if lang == "ja" else "Monthly reports")
    fits(page)
    with page.expect_download() as got:
        page.locator("#report-current a", has_text="CSV").click()
    text = Path(got.value.path()).read_text(encoding="utf-8-sig")
    assert text.startswith("terminal,terminal_name,item") and "TA1" in text
    address = f"{size}@acme.test"
    page.fill("#recipients textarea", f"kanri@acme.test\n{address}")
    page.click("#recipients button[type=submit]")
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(page.locator("#recipients textarea")).to_have_value(f"kanri@acme.test\n{address}")
    with world.session() as s:
        assert address in s.get(Customer, world.ids["customer_a"]).report_recipients
    page.goto(f"{base}/alarms")
    with page.expect_download() as got:
        page.click("#alarms-csv")
    assert "leak1.ior" in Path(got.value.path()).read_text(encoding="utf-8-sig")


@pytest.mark.parametrize(("size", "lang"), CASES, ids=IDS)
def test_customer_admin_invites_promotes_and_removes_a_user(open_page, site, size, lang):
    base, world = site
    page = open_page("admin_a", size, lang)
    page.goto(f"{base}/team")
    expect(page.locator("h1")).to_have_text("ユーザー" if lang == "ja" else "Users")
    email = f"new-{size}@acme.test"
    page.fill("#invite input[name=email]", email)
    page.fill("#invite input[name=name]", "新人")
    page.click("#invite button[type=submit]")
    expect(page.locator(".flash.ok")).to_contain_text(email)
    row = page.locator(f'#members tr[data-email="{email}"]')
    expect(row).to_contain_text(
        "招待済み・未ログイン" if lang == "ja" else "invited, not logged in"
    )
    fits(page)
    # The role select saves on change.
    row.locator("select[name=role]").select_option("customer_admin")
    expect(page.locator(".flash.ok")).to_be_visible()
    with world.session() as s:
        user = s.scalars(sa.select(User).where(User.email == email)).one()
        assert user.role == "customer_admin" and user.customer_id == world.ids["customer_a"]
    # Removing asks first.
    page.once("dialog", lambda d: d.accept())
    row.locator(".remove-form button").click()
    expect(page.locator(".flash.ok")).to_be_visible()
    expect(row).to_have_count(0)
    with world.session() as s:
        assert not s.scalars(sa.select(User).where(User.email == email)).one().active
