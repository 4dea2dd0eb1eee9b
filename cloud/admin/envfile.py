"""The environment file every mimamori process reads (``/etc/mimamori/env``).

``KEY=VALUE`` lines, as systemd's ``EnvironmentFile=`` reads them. The
install owns the keys it writes: options given to it win, secrets it
generated once are kept on every rerun (so a rerun rotates nothing), and
keys an operator added by hand are carried over below a marker.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cloud.admin.errors import AdminError
from cloud.config import read_env_file
from cloud.errors import ConfigError

HEADER = """\
# mimamori: read by every process (systemd EnvironmentFile=, or
# MIMAMORI_ENV_FILE=/etc/mimamori/env for commands run by hand).
# Written by `mimamori-admin install`; a rerun keeps the secrets and the
# lines below "added by hand". Every variable: docs/configuration.md.
"""
HAND_MARKER = "# -- added by hand (kept by mimamori-admin install) --"


def read(path: Path) -> dict[str, str]:
    """The file's variables (as the processes' loader reads them); empty
    when it does not exist yet."""
    if not path.exists():
        return {}
    try:
        return read_env_file(path)
    except ConfigError as err:
        raise AdminError(str(err)) from err


def render(values: Mapping[str, str], previous: Mapping[str, str]) -> str:
    """``values`` in order, then the variables of ``previous`` it does not set."""
    for key, value in values.items():
        if "\n" in value or value != value.strip():
            raise AdminError(f"{key}: a value must be one line without surrounding blanks")
    lines = [HEADER, *(f"{k}={v}" for k, v in values.items())]
    extra = {k: v for k, v in previous.items() if k not in values}
    if extra:
        lines += ["", HAND_MARKER, *(f"{k}={v}" for k, v in extra.items())]
    return "\n".join(lines) + "\n"
