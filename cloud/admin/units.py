"""systemd units from the templates in ``deploy/systemd/``.

A template is a unit file with ``@NAME@`` placeholders for what differs
between sites (paths, users, ports). Rendering fills every one; a template
naming a placeholder the install does not know is an error, so a unit can
never be installed half filled in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from cloud.admin.errors import AdminError

PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def render(template: str, values: Mapping[str, str], name: str = "unit") -> str:
    """``template`` with every ``@NAME@`` replaced by ``values[NAME]``."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise AdminError(f"{name}: unknown placeholder @{key}@")
        value = values[key]
        if any(c.isspace() for c in value):
            raise AdminError(f"{name}: @{key}@ = {value!r} has blanks; systemd would split it")
        return value

    return PLACEHOLDER.sub(fill, template)


def templates(directory: Path) -> dict[str, str]:
    """Unit name -> template text, for every ``*.service`` in ``directory``."""
    found = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.service"))}
    if not found:
        raise AdminError(f"no unit templates in {directory} (is --app-dir the checkout?)")
    return found
