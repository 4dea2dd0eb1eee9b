"""The site in a real browser: Debian's Chromium driven by Playwright, against
the app on a real WSGI server on a loopback port.

Never runs ``playwright install``: Chromium is the Debian package
(``apt-get install -y chromium``). Every page is also checked for console
errors, which is where a Content-Security-Policy violation would show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from cloud.alarms.engine import Context, raise_level
from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    ChannelLabel,
    ChannelSpec,
    Connectivity,
    Delivery,
    ForwardingEndpoint,
    MaintenanceWindow,
    Severity,
    Terminal,
    TerminalCommand,
    TerminalStatus,
    User,
    apply_birth,
    utcnow,
)
from cloud.notify import sftp
from cloud.services import commands
from cloud.timeseries import Point
from tests.support.web import (
    CHANNELS_A,
    EMAILS,
    PASSWORD,
    LiveServer,
    build_world,
    make_app,
    migrate_template,
    page_width,
    submit_login,
)

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """A world whose data ends now (the browser's clock), served for real."""
    directory = tmp_path_factory.mktemp("browser")
    path = migrate_template(directory)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    world = build_world(f"sqlite:///{path}", now=now)
    app = make_app(world, clock=utcnow)
    with LiveServer(app) as server:
        yield server.url, world
    world.engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert errors == [], f"browser console errors: {errors}"


def log_in(page: Page, base: str, who: str, world: Any = None) -> None:
    submit_login(page, base, who, world)
    expect(page.locator("h1")).to_have_text("Dashboard")


def drawn(figure, rgb=None):
    """Pixels of the figure's canvas that are painted (of colour ``rgb`` if given)."""
    return figure.locator("canvas").evaluate(
        """(c, rgb) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           let n = 0;
           for (let i = 0; i < d.length; i += 4) {
             if (!d[i + 3]) continue;
             if (!rgb || (Math.abs(d[i] - rgb[0]) < 12 && Math.abs(d[i + 1] - rgb[1]) < 12
                          && Math.abs(d[i + 2] - rgb[2]) < 12)) n++;
           }
           return n; }""",
        rgb,
    )


ALARM_RED = [0xC6, 0x28, 0x28]
WARNING_ORANGE = [0xB2, 0x6A, 0x00]


def test_log_in_and_see_the_graph_with_data(page, site):
    base, _world = site
    log_in(page, base, "viewer_a")
    page.click("text=Sub A")
    figure = page.locator("#graphs figure.graph")
    expect(figure.locator("canvas")).to_have_count(1)
    # Without key channels: the terminal's first three, on one graph.
    expect(figure).to_have_attribute("data-channels", "leak1.io,leak1.ior,leak1.v")
    expect(figure).to_have_attribute("data-raw", "true")
    # A day of one-minute samples of leak1.ior, the data ending when the site
    # was built: minutes may have passed since on a busy machine.
    assert 1400 <= int(figure.get_attribute("data-points")) <= 1440
    assert drawn(figure) > 1000
    # A week is more than the point budget: buckets from the server.
    with page.expect_response(lambda r: "series.json" in r.url and "leak1.ior" in r.url):
        page.click(".ranges button[data-range='604800']")
    expect(figure).to_have_attribute("data-raw", "false")
    # Drag-zoom over part of the plot re-requests that range: raw samples again.
    over = figure.locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None
    with page.expect_response(lambda r: "series.json" in r.url and "leak1.ior" in r.url) as r:
        page.mouse.move(box["x"] + box["width"] * 0.90, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
    zoomed = r.value.json()
    assert zoomed["raw"] is True and zoomed["end"] - zoomed["start"] < 2 * 86400
    expect(figure).to_have_attribute("data-raw", "true")


def test_acknowledge_an_alarm(page, site):
    base, world = site
    log_in(page, base, "admin_a")
    page.click("nav.menu >> text=Alarms")
    page.click(f'a[href="/alarms/{world.ids["alarm_a"]}"]')
    expect(page.locator("#alarm-state")).to_have_text("raised")
    page.fill("input[name=comment]", "Checked the panel, cleaning the sensor")
    page.click("form.ack button[type=submit]")
    expect(page.locator("#alarm-state")).to_have_text("acknowledged")
    expect(page.locator("text=Checked the panel, cleaning the sensor")).to_be_visible()
    with world.session() as s:
        assert s.get(Alarm, world.ids["alarm_a"]).state == AlarmState.ACKNOWLEDGED


def test_change_a_threshold_and_see_pending(page, site):
    base, world = site
    log_in(page, base, "admin_a")
    page.goto(f"{base}/terminals/TA1/settings")
    rid = world.ids["rule_a"]
    page.fill(f"input[name='rule-{rid}-warn']", "28")
    page.click("form.settings button[type=submit].primary")
    expect(page.locator("#config-status")).to_contain_text("pending")
    expect(page.locator("#config-status")).to_contain_text("version 1")
    with world.session() as s:
        assert s.get(AlarmCondition, rid).warn == 28.0


def test_dashboard_on_a_phone(browser, site, tmp_path):
    base, _world = site
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="ja-JP",
    )
    page = context.new_page()
    try:
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{base}/login")
        page.fill("input[name=email]", EMAILS["admin_a"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        expect(page.locator("h1")).to_have_text("Dashboard")  # the user's language: English
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert page_width(page) <= 390
        # The menu folds into a button; it opens.
        expect(page.locator("nav.menu")).to_be_hidden()
        page.click(".menu-button")
        expect(page.locator("nav.menu")).to_be_visible()
        page.click(".menu-button")
        shot = Path(os.environ.get("MIMAMORI_SCREENSHOT_DIR", tmp_path)) / "dashboard-phone.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_operator_suspends_and_resumes_a_terminal(browser, site, viewport):
    """The service-status card: suspending asks first, then shows the new
    state; the row the broker reconciler reads is changed; resuming undoes it."""
    base, world = site
    context = browser.new_context(
        locale="en-US", viewport={"width": viewport[0], "height": viewport[1]}
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        log_in(page, base, "operator", world)
        page.goto(f"{base}/admin/terminals/TB1")
        status = page.locator("#service-status .terminal-status")
        expect(status).to_have_text("in service")
        page.once("dialog", lambda d: d.accept())
        page.click("#service-status button:has-text('Suspend')")
        expect(status).to_have_attribute("data-status", "suspended")
        expect(status).to_have_text("suspended")
        with world.session() as s:
            assert s.get(Terminal, "TB1").status == TerminalStatus.SUSPENDED
        page.click("#service-status button:has-text('Resume')")
        expect(status).to_have_text("in service")
        with world.session() as s:
            assert s.get(Terminal, "TB1").status == TerminalStatus.ACTIVE
    finally:
        context.close()


@pytest.mark.parametrize(
    ("viewport", "language", "labels"),
    [
        ((1366, 900), "en", ("Sample now", "delivered, waiting for the answer", "done")),
        ((390, 844), "ja", ("今すぐ計測", "配信済み・応答待ち", "完了")),
    ],
    ids=["desktop-en", "phone-ja"],
)
def test_customer_admin_sends_sample_now_and_sees_the_answer(
    browser, site, viewport, language, labels
):
    """The remote-commands card: the button sends, the row shows the broker
    took it, and the terminal's answer (recorded as the ingest records a
    cmdres) appears without reloading the page."""
    base, world = site
    with world.session() as s:
        s.get(User, world.ids["admin_a"]).language = language
        s.commit()
    context = browser.new_context(
        locale="en-US", viewport={"width": viewport[0], "height": viewport[1]}
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base}/login")
        page.fill("input[name=email]", EMAILS["admin_a"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        page.goto(f"{base}/terminals/TA1")
        expect(page.locator("#commands button[data-command=reboot]")).to_have_count(0)
        button = page.locator("#commands button[data-command=sample_now]")
        expect(button).to_have_text(labels[0])
        button.click()
        row = page.locator("#command-list tr.command").first
        expect(row).to_have_attribute("data-state", "delivered")
        expect(row.locator(".badge")).to_have_text(labels[1])
        with world.session() as s:
            cmd_id = s.scalar(sa.select(sa.func.max(TerminalCommand.id)))
            commands.record_result(s, "TA1", cmd_id, ok=True, result={"channels": 10}, at=utcnow())
            s.commit()
        expect(row).to_have_attribute("data-state", "succeeded")  # refreshed in place
        expect(page.locator(f"#command-list tr.command[data-id='{cmd_id}'] .badge")).to_have_text(
            labels[2]
        )
        assert page_width(page) <= viewport[0]
        assert errors == []
    finally:
        context.close()
        with world.session() as s:
            s.get(User, world.ids["admin_a"]).language = "en"
            s.commit()


@contextmanager
def person(browser, site, who, *, lang, viewport):
    """A page logged in as ``who`` speaking ``lang`` (the user's setting; the
    browser itself says en-US and keeps its clock in UTC, not the customer's
    zone), with the page errors collected; the language is set back after."""
    base, world = site
    with world.session() as s:
        s.get(User, world.ids[who]).language = lang
        s.commit()
    context = browser.new_context(
        viewport={"width": viewport[0], "height": viewport[1]},
        locale="en-US",
        timezone_id="UTC",
        is_mobile=viewport[0] < 500,
        has_touch=viewport[0] < 500,
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        submit_login(page, base, who, world)
        expect(page.locator("#summary")).to_be_visible()
        yield page, errors
    finally:
        context.close()
        with world.session() as s:
            s.get(User, world.ids[who]).language = "en"
            s.commit()


def shot(page, name):
    """A full-page screenshot where MIMAMORI_SCREENSHOT_DIR says (for looking at)."""
    directory = os.environ.get("MIMAMORI_SCREENSHOT_DIR")
    if directory:
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


# -- the fleet overview ------------------------------------------------------------

FLEET = (
    ("FL-ALARM", "Pump House", Connectivity.ONLINE, Severity.ALARM),
    ("FL-OFF", "Far Away", Connectivity.OFFLINE, None),
    ("FL-OK", "Quiet Hall", Connectivity.ONLINE, None),
)


@pytest.fixture(scope="module")
def fleet_site(site):
    """Customer A's fleet: TA1 (warning) plus an alarm, an offline and a
    normal terminal; the alarm one has a labelled key contact."""
    base, world = site
    with world.session() as s:
        for tid, name, conn, severity in FLEET:
            s.add(
                Terminal(id=tid, customer_id=world.ids["customer_a"], name=name, connectivity=conn)
            )
            s.flush()
            apply_birth(
                s, tid, [*CHANNELS_A, ChannelSpec(10, "di.di1", "", "contact")], 1, utcnow()
            )
            if severity is not None:
                s.add(
                    Alarm(
                        terminal_id=tid,
                        channel="leak1.ior",
                        cond="leak",
                        severity=severity,
                        state=AlarmState.RAISED,
                        raised_at=utcnow(),
                        value=55.0,
                        threshold=50.0,
                    )
                )
        s.add(
            ChannelLabel(
                terminal_id="FL-ALARM",
                channel="di.di1",
                display_name="受電遮断器",
                state_off="切",
                state_on="入",
                key=True,
            )
        )
        s.commit()
    world.store.write(
        [Point("FL-ALARM", "di.di1", utcnow(), 1), Point("FL-ALARM", "leak1.ior", utcnow(), 55.0)]
    )
    return base, world


@pytest.mark.parametrize(
    ("viewport", "lang"), [((1366, 900), "en"), ((390, 844), "ja")], ids=["desktop-en", "phone-ja"]
)
def test_fleet_overview_puts_the_worst_first(browser, fleet_site, viewport, lang):
    base, world = fleet_site
    width, height = viewport
    with person(browser, (base, world), "viewer_a", lang=lang, viewport=viewport) as (page, errors):
        rows = page.locator("#fleet tbody tr")
        expect(rows).to_have_count(4)
        assert rows.evaluate_all("rs => rs.map(r => r.dataset.terminal)") == [
            "FL-ALARM",
            "TA1",
            "FL-OFF",
            "FL-OK",
        ]
        alarm_tile = page.locator('#summary a[data-status="alarm"]')
        expect(alarm_tile.locator("b")).to_have_text("1")
        expect(alarm_tile).to_contain_text("警報" if lang == "ja" else "Alarm")
        first = rows.first
        expect(first).to_contain_text("受電遮断器 入")
        expect(first).to_contain_text("55 mA")
        # The summary and the worst terminal are on the first screen, one
        # terminal takes at most two short lines, nothing scrolls sideways.
        box = first.bounding_box()
        assert box is not None and box["y"] + box["height"] <= height
        assert box["height"] <= 64
        assert page_width(page) <= width
        shot(page, f"fleet-{width}-{lang}")
        # Search, then a status from the band.
        page.fill("input[name=q]", "pump")
        page.press("input[name=q]", "Enter")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-terminal", "FL-ALARM")
        page.goto(f"{base}/")
        page.click('#summary a[data-status="offline"]')
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-terminal", "FL-OFF")
    assert errors == []


@pytest.mark.parametrize(
    ("viewport", "lang"), [((1366, 900), "en"), ((390, 844), "ja")], ids=["desktop-en", "phone-ja"]
)
def test_admin_names_a_contact_and_sees_it_live(browser, fleet_site, viewport, lang):
    """The channel-names page: name a contact and its states, then the
    terminal page reads the state by name."""
    base, world = fleet_site
    width = viewport[0]
    with world.session() as s:
        s.execute(sa.delete(ChannelLabel).where(ChannelLabel.terminal_id == "FL-OK"))
        s.commit()
    with person(browser, (base, world), "admin_a", lang=lang, viewport=viewport) as (page, errors):
        page.goto(f"{base}/terminals/FL-OK/labels")
        row = page.locator('#labels tr[data-channel="di.di1"]')
        row.locator('input[name="name:di.di1"]').fill("非常用発電機")
        row.locator('input[name="off:di.di1"]').fill("停止")
        row.locator('input[name="on:di.di1"]').fill("運転")
        row.locator('input[name="key:di.di1"]').check()
        page.click("form.labels button[type=submit]")
        expect(page.locator(".flash.ok")).to_have_text(
            "計測点の名称を保存しました。" if lang == "ja" else "Channel names saved."
        )
        assert page_width(page) <= width
        shot(page, f"labels-{width}-{lang}")
        world.store.write([Point("FL-OK", "di.di1", utcnow(), 0)])
        page.goto(f"{base}/terminals/FL-OK")
        live = page.locator('#live tr[data-channel="di.di1"]')
        expect(live.locator("th")).to_contain_text("非常用発電機")
        expect(live.locator(".v")).to_have_text("停止")
        page.goto(f"{base}/")
        expect(page.locator('#fleet tr[data-terminal="FL-OK"]')).to_contain_text(
            "非常用発電機 停止"
        )
    assert errors == []


# -- graphs: levels, alarms, late samples, several channels, language and zone ----------

JST = ZoneInfo("Asia/Tokyo")
LEGEND_TIME = {  # the legend's time as Intl writes it in each language
    "ja": (r"^(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2}):(\d{2})$", (0, 1, 2)),
    "en": (r"^(\d{2})/(\d{2})/(\d{4}), (\d{2}):(\d{2}):(\d{2})$", (2, 0, 1)),
}
WORDS = {
    "ja": {
        "warning level": "注意レベル",
        "alarm level": "警報レベル",
        "late": "遅れて届いたデータ",
    },
    "en": {"warning level": "warning level", "alarm level": "alarm level", "late": "arrived late"},
}


@pytest.fixture(scope="module")
def graph_site(site):
    base, world = site
    # One sample of the last hour arrived late from the terminal's queue.
    late = int(datetime.now(UTC).timestamp()) // 60 * 60 - 1800
    world.store.write([Point("TA1", "leak1.ior", late, 12.5, historical=True)])
    return base, world


@pytest.mark.parametrize(
    ("viewport", "lang"), [((1366, 900), "en"), ((390, 844), "ja")], ids=["desktop-en", "phone-ja"]
)
def test_graph_draws_levels_alarms_and_late_samples_in_the_users_words(
    browser, graph_site, viewport, lang
):
    base, world = graph_site
    words = WORDS[lang]
    with person(browser, (base, world), "viewer_a", lang=lang, viewport=viewport) as (page, errors):
        page.goto(f"{base}/terminals/TA1")
        figure = page.locator("#graphs figure.graph")
        expect(figure).to_have_attribute("data-levels", "2")
        notes = figure.locator(".graph-notes")
        with world.session() as s:  # another test of this module may have moved them
            rule = s.get(AlarmCondition, world.ids["rule_a"])
            warn, alarm = f"{rule.warn:g}", f"{rule.alarm:g}"
        expect(notes.locator("li.level")).to_have_text(
            [
                f"leak1.ior: {words['warning level']} {warn} mA",
                f"leak1.ior: {words['alarm level']} {alarm} mA",
            ]
        )
        expect(notes.locator("li.alarm.sev-warning")).to_have_count(1)  # alarm_a, still open
        expect(notes.locator("li.late")).to_contain_text(words["late"])
        # The levels are dashed lines, the open warning a shaded span with its flag.
        assert drawn(figure, ALARM_RED) > 150
        assert drawn(figure, WARNING_ORANGE) > 150
        assert page_width(page) <= viewport[0]
        shot(page, f"graph-{viewport[0]}-{lang}")
        # The legend tells the time under the cursor in the page's language, in
        # the customer's zone (JST), not the browser's (UTC).
        with page.expect_response(lambda r: "series.json" in r.url) as answer:
            page.reload()
        shown = answer.value.json()
        over = figure.locator(".u-over")
        over.scroll_into_view_if_needed()
        box = over.bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
        stamp = figure.locator(".u-legend .u-series").first.locator(".u-value").inner_text()
        pattern, order = LEGEND_TIME[lang]
        m = re.match(pattern, stamp)
        assert m, stamp
        y, mo, d = (int(m.group(i + 1)) for i in order)
        hovered = datetime(y, mo, d, int(m[4]), int(m[5]), int(m[6]), tzinfo=JST).timestamp()
        expected = shown["start"] + 0.8 * (shown["end"] - shown["start"])
        assert abs(hovered - expected) < 1800, (stamp, expected)
        # A second channel with another unit joins the same graph on its own axis.
        page.click("details.picks summary")
        with page.expect_response(lambda r: "pm1.kw" in r.url):
            page.check("input[name=graph-channel][value='pm1.kw']")
        expect(figure).to_have_attribute("data-channels", "leak1.io,leak1.ior,leak1.v,pm1.kw")
        expect(figure.locator(".u-legend")).to_contain_text("pm1.kw")
        # Custom range: dates typed as the page shows them, days in the customer's zone.
        today = datetime.now(JST).date()
        first = today - timedelta(days=1)
        sep = "/" if lang == "ja" else "-"
        expect(page.locator("input[name=from]")).to_have_attribute(
            "placeholder", f"YYYY{sep}MM{sep}DD"
        )
        page.fill("input[name=from]", first.strftime(f"%Y{sep}%m{sep}%d"))
        page.fill("input[name=to]", today.strftime(f"%Y{sep}%m{sep}%d"))
        with page.expect_response(lambda r: "series.json" in r.url) as answer:
            page.click(".ranges button[data-range='custom']")
        midnight = datetime(first.year, first.month, first.day, tzinfo=JST)
        assert answer.value.json()["start"] == int(midnight.timestamp())
        assert answer.value.json()["end"] == int((midnight + timedelta(days=2)).timestamp())
    assert errors == []


@pytest.mark.parametrize(
    ("viewport", "lang"), [((390, 844), "ja"), ((1366, 900), "en")], ids=["phone-ja", "desktop-en"]
)
def test_alarm_page_shows_values_with_units_and_the_graph_around_the_alarm(
    browser, graph_site, viewport, lang
):
    base, world = graph_site
    with person(browser, (base, world), "viewer_a", lang=lang, viewport=viewport) as (page, errors):
        page.goto(f"{base}/alarms/{world.ids['alarm_a']}")
        expect(page.locator("#alarm-value")).to_have_text("31.5 mA")
        expect(page.locator("#alarm-threshold")).to_have_text("30.0 mA")
        expect(page.locator("#alarm-levels .badge")).to_have_count(2)
        expect(page.locator("#alarm-levels")).to_contain_text("50.0 mA")
        figure = page.locator("#graphs figure.graph")
        expect(figure).to_have_attribute("data-channels", "leak1.ior")
        expect(figure).to_have_attribute("data-alarms", "1")
        assert int(figure.get_attribute("data-points")) > 60  # the hours around it
        assert drawn(figure, ALARM_RED) > 150 and drawn(figure, WARNING_ORANGE) > 150
        box = figure.bounding_box()
        assert box is not None and box["width"] <= viewport[0]
        assert page_width(page) <= viewport[0]
        shot(page, f"alarm-{viewport[0]}-{lang}")
    assert errors == []


# -- quiet times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "language", "words"),
    [
        ((1366, 900), "en", ("Maintenance", "in force", "muted", "ended")),
        ((390, 844), "ja", ("メンテナンス", "実施中", "通知停止中", "終了")),
    ],
    ids=["desktop-en", "phone-ja"],
)
def test_admin_mutes_a_channel_for_maintenance_and_sees_the_alarm_muted(
    browser, site, viewport, language, words
):
    """Plan a window for one channel through the menu's Maintenance page; an
    alarm on that channel meanwhile is listed as muted and queued to nobody;
    ending the window shows it ended."""
    base, world = site
    width, height = viewport
    with world.session() as s:
        s.get(User, world.ids["admin_a"]).language = language
        s.commit()
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    alarm_id = None
    try:
        page.goto(f"{base}/login")
        page.fill("input[name=email]", EMAILS["admin_a"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        if width < 600:
            page.click(".menu-button")
        page.click(f"nav.menu >> text={words[0]}")
        form = page.locator("#new-window")
        form.locator("select[name=terminal_id]").select_option("TA1")
        form.locator("select[name=channels]").select_option(["leak1.ior"])
        later = datetime.now(UTC).astimezone(ZoneInfo("Asia/Tokyo")) + timedelta(hours=2)
        form.locator("input[name=ends_at]").fill(later.strftime("%Y-%m-%dT%H:%M"))
        form.locator("input[name=reason]").fill("annual inspection")
        form.locator("button[type=submit]").click()
        row = page.locator("#windows tr.window-active")
        expect(row).to_have_count(1)
        expect(row).to_contain_text(words[1])
        expect(row).to_contain_text("annual inspection")
        assert page_width(page) <= width
        with world.session() as s:
            now = utcnow()
            alarm = raise_level(
                s,
                s.get(Terminal, "TA1"),
                "leak1.ior",
                "hi",
                severity=Severity.ALARM,
                value=60.0,
                threshold=50.0,
                at=now,
                ctx=Context(now),
            )
            s.commit()
            alarm_id = alarm.id
            assert alarm.muted
            rows = s.scalars(sa.select(Delivery).where(Delivery.alarm_id == alarm_id)).all()
            assert rows == []
        page.goto(f"{base}/alarms")
        badge = page.locator(f"a[href='/alarms/{alarm_id}'] ~ .muted-alarm")
        expect(badge).to_have_text(words[2])
        page.goto(f"{base}/maintenance")
        page.once("dialog", lambda d: d.accept())
        row.locator("button[type=submit]").click()
        expect(page.locator("#windows tr.window-active")).to_have_count(0)
        expect(page.locator("#windows tr.window-ended").first).to_contain_text(words[3])
        assert errors == []
    finally:
        context.close()
        with world.session() as s:
            s.get(User, world.ids["admin_a"]).language = "en"
            if alarm_id is not None:
                s.delete(s.get(Alarm, alarm_id))
            s.execute(sa.delete(MaintenanceWindow))
            s.commit()


# -- file forwarding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("viewport", "language", "words"),
    [
        ((1366, 900), "en", ("Forwarding", "Key of this endpoint", "hourly")),
        ((390, 844), "ja", ("転送", "この転送先の鍵", "1時間ごと")),
    ],
    ids=["desktop-en", "phone-ja"],
)
def test_admin_adds_an_sftp_endpoint_and_reads_its_public_key(
    browser, site, viewport, language, words
):
    """The forwarding page: an sftp:// address with the server's host key
    makes a file endpoint; its page shows the public key to install and the
    pinned key's fingerprint, without sideways scrolling on a phone."""
    base, world = site
    width, height = viewport
    with world.session() as s:
        s.get(User, world.ids["admin_a"]).language = language
        s.commit()
    _private, host_line = sftp.new_key("server")
    context = browser.new_context(locale="en-US", viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{base}/login")
        page.fill("input[name=email]", EMAILS["admin_a"])
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit].primary")
        if width < 600:
            page.click(".menu-button")
        page.click(f"nav.menu >> text={words[0]}")
        form = page.locator("form[action='/forwarding']")
        form.locator("input[name=name]").fill(f"HULFT {language}")
        form.locator("input[name=url]").fill("sftp://hulft@bms.acme.test/recv")
        form.locator("input[name=host_key]").fill(host_line)
        form.locator("select[name=file_period]").select_option("hourly")
        form.locator("button[type=submit]").click()
        expect(page.locator("#sftp-key h2")).to_have_text(words[1])
        key = page.locator("#public-key")
        expect(key).to_contain_text("ssh-ed25519 AAAA")
        expect(page.locator("#host-key-fingerprint")).to_have_text(
            sftp.fingerprint(sftp.parse_host_key(host_line))
        )
        assert page_width(page) <= width
        page.goto(f"{base}/forwarding")
        expect(page.locator("#endpoints")).to_contain_text(words[2])
        assert errors == []
    finally:
        context.close()
        with world.session() as s:
            s.get(User, world.ids["admin_a"]).language = "en"
            s.execute(sa.delete(ForwardingEndpoint).where(ForwardingEndpoint.kind == "sftp"))
            s.commit()
