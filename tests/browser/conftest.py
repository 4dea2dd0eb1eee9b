"""Fixtures of the browser tests: one Debian Chromium for the whole session.

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


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        raise RuntimeError("Chromium missing: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
