"""Session-wide test settings shared by every tier."""

from __future__ import annotations

from tests.support import micropython


def pytest_report_header(config):
    # Shows at the top of every run which real MicroPython the mpy tier used.
    try:
        return [f"micropython: {micropython.version()}"]
    except Exception as err:  # the tier's own tests fail with the details
        return [f"micropython: unavailable ({err})"]
