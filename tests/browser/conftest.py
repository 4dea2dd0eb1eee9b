"""Fixtures of the browser tests: one Debian Chromium per test module.

Module scope, not session: Playwright's sync API keeps an asyncio loop
running in the main thread while it is started, so a session-wide browser
broke every later test that calls ``asyncio.run`` (the simulator's, the
demo's sinks) and any module starting Playwright itself.

Never runs ``playwright install``: Chromium is the Debian package
(``apt-get install -y chromium``); a missing one is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        raise RuntimeError("Chromium missing: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
