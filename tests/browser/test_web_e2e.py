"""End to end: a threshold changed in the browser is applied by a virtual terminal.

Nothing is recorded or mocked. The project's Mosquitto (its own accounts
and ACLs), a migrated SQLite database, the ingest worker as a process
(``python -m cloud.ingest``), a virtual terminal (``python -m edge.host``)
reading simulated sensors on a pty (``python -m firmware_sim serve``), the
web app with the paho publisher on a real WSGI server, and Debian's
Chromium driven by Playwright. The chain under test::

    browser -> web (save, retained config frame) -> broker -> terminal
    terminal (validate, apply, cfgack) -> broker -> ingest -> database -> web page

Every process listens on a free loopback port and is stopped at the end;
waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, expect

from cloud import db
from cloud.models import AlarmCondition, AuditEntry, Channel, ConfigStatus, Terminal, utcnow
from cloud.services.publisher import PahoPublisher
from cloud.timeseries import SqlStore
from edge.config import CLOUD_FILE
from tests.support.broker import HOST, MosquittoBroker
from tests.support.e2e import ACCOUNTS, ADMIN_EMAIL, TID, WEB_PASSWORD, seed_site
from tests.support.ingest import IngestProcess, wait_for
from tests.support.sim import SimProcess
from tests.support.virtual_terminal import TerminalProcess, site_for
from tests.support.web import PASSWORD, LiveServer, World, make_app, migrate_template

pytestmark = pytest.mark.browser

TIMEOUT_MS = 15_000
BIRTH_S = 30.0  # terminal start, connect, birth, ingest
APPLIED_S = 30.0  # save -> terminal -> cfgack -> ingest -> page
WIRING = [
    {"unit": 1, "profile": "IM-100", "name": "leak1"},
    {"unit": 2, "profile": "PM-300", "name": "pm1"},
    {"unit": 3, "profile": "TH-10", "name": "th1"},
]
N_CHANNELS = 10  # what the three profiles announce in the birth frame
FAST: dict[str, Any] = {"sample": {"interval": 1}, "bus": {"timeout_ms": 200, "retries": 1}}


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Broker, database, ingest, sensors, terminal and site, started in that
    order and stopped in reverse; yields the pieces a test looks at."""
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(MosquittoBroker(tmp_path / "mqtt", ACCOUNTS))
        url = f"sqlite:///{migrate_template(tmp_path)}"
        engine = db.make_engine(url)
        stack.callback(engine.dispose)
        world = World(url, engine, SqlStore(engine))
        seed_site(world)
        with world.session() as s:
            rule = AlarmCondition(
                terminal_id=TID,
                channel="leak1.ior",
                cond="leak",
                warn=30.0,
                alarm=50.0,
                hysteresis=2.0,
                on_delay_s=60,
                off_delay_s=60,
            )
            s.add(rule)
            s.commit()
            world.ids = {"rule": rule.id}
        ingest = stack.enter_context(
            IngestProcess(
                broker,
                tmp_path,
                "ingest-e2e",
                "e2e",
                {"MIMAMORI_DATABASE_URL": url},
                extra=["--no-forwarding"],
            )
        )
        sim = stack.enter_context(
            SimProcess(
                "--pty",
                "--device",
                "insulation:1",
                "--device",
                "meter:2",
                "--device",
                "thermo:3",
                "--speed",
                "0",
                "--start",
                "2026-06-01T14:00",
                "--seed",
                "7",
            )
        )
        site = site_for(TID, broker.ports["terminal"], wiring=WIRING, **FAST)
        terminal_started = time.monotonic()
        terminal = stack.enter_context(
            TerminalProcess(tmp_path / "terminal", site, sim.endpoints["pty"])
        )
        publisher = PahoPublisher(HOST, broker.ports["service"], "web", WEB_PASSWORD, timeout_s=5.0)
        server = stack.enter_context(LiveServer(make_app(world, clock=utcnow, publisher=publisher)))
        yield {
            "world": world,
            "url": server.url,
            "terminal": terminal,
            "ingest": ingest,
            "terminal_started": terminal_started,
        }


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], f"browser console errors: {errors}"


def channels_registered(world: World) -> int:
    with world.session() as s:
        return int(
            s.scalar(
                sa.select(sa.func.count())
                .select_from(Channel)
                .where(Channel.terminal_id == TID, Channel.retired_at.is_(None))
            )
            or 0
        )


def status_after_reloads(page: Page, wanted: str, timeout: float) -> str:
    """Reload the page until ``#config-status`` contains ``wanted``; its text."""
    deadline = time.monotonic() + timeout
    while True:
        text = page.locator("#config-status").inner_text()
        if wanted in text:
            return text
        if time.monotonic() > deadline:
            raise AssertionError(f"no {wanted!r} after {timeout} s; the page says {text!r}")
        page.wait_for_timeout(250)  # poll interval; each round trip is a full page load
        page.reload()


def test_a_threshold_changed_in_the_browser_is_applied_by_the_terminal(chain, page):
    world, base, terminal = chain["world"], chain["url"], chain["terminal"]
    wait_for(
        lambda: channels_registered(world) == N_CHANNELS,
        BIRTH_S,
        f"the terminal's birth to register {N_CHANNELS} channels; "
        f"terminal log:\n{terminal.log()}\ningest log:\n{chain['ingest'].log()}",
    )
    registered = time.monotonic()
    with world.session() as s:
        assert s.get(Terminal, TID).config_status == ConfigStatus.NONE

    page.goto(f"{base}/login")
    page.fill("input[name=email]", ADMIN_EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit].primary")
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.goto(f"{base}/terminals/{TID}/settings")
    expect(page.locator("#config-status")).to_contain_text("no configuration sent")
    rid = world.ids["rule"]
    page.fill(f"input[name='rule-{rid}-warn']", "27.5")
    # Freeze the terminal (a slow link, a busy CPU) so "pending" is certain to
    # be what the page shows first; the config waits for it at the broker.
    assert terminal.proc is not None
    terminal.proc.send_signal(signal.SIGSTOP)
    try:
        page.click("form.settings button[type=submit].primary")
        expect(page.locator("#config-status")).to_contain_text("pending (version 1)")
    finally:
        terminal.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()

    text = status_after_reloads(page, "applied", APPLIED_S)
    applied_after = time.monotonic() - resumed
    assert "applied (version 1)" in text, text
    assert page.locator("input[name='rule-%d-warn']" % rid).input_value() == "27.5"

    # The terminal really runs it: its flash holds the new threshold, and its
    # own ack (not the web) is what the ingest recorded.
    stored = json.loads((terminal.state_dir / CLOUD_FILE).read_text())
    assert stored["version"] == 1, stored
    [ior] = [t for t in stored["thresholds"] if t["channel"] == "leak1.ior"]
    assert (ior["cond"], ior["warn"], ior["alarm"]) == ("leak", 27.5, 50), ior
    with world.session() as s:
        row = s.get(Terminal, TID)
        assert (row.config_status, row.config_version, row.config_reason) == (
            ConfigStatus.APPLIED,
            1,
            None,
        )
        acks = s.scalars(
            sa.select(AuditEntry).where(
                AuditEntry.object_id == TID, AuditEntry.action == "terminal.config.ack"
            )
        ).all()
        assert [(a.details["version"], a.details["ok"], a.details["reason"]) for a in acks] == [
            (1, True, "applied")
        ]
    print(
        f"start->channels registered {registered - chain['terminal_started']:.1f} s; "
        f"terminal resumed->'applied' on the page {applied_after:.1f} s"
    )
