"""Calendar dates as people type them."""

from __future__ import annotations

import re
from datetime import date

from cloud.services.errors import N_, Invalid

# 2026-12-06, 2026/12/6 (as Japanese write it) or 2026.12.06
_DAY = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\s*$")


def parse_day(text: str, field: str) -> date:
    """The date in ``text``; raises :class:`Invalid` naming ``field`` otherwise."""
    match = _DAY.match(text or "")
    try:
        if match is None:
            raise ValueError(text)
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as err:
        raise Invalid(
            N_("%(field)s: %(value)s is not a date (YYYY-MM-DD)."), field=field, value=text[:40]
        ) from err
