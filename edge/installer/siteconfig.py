"""The terminal's site configuration file, checked before a board is touched.

A site file is JSON, one per terminal, kept out of version control because
it holds the terminal's broker password::

    {
      "terminal_id": "T0001",
      "broker": {"host": "mqtt.example.net", "port": 8883, "tls": true},
      "credentials": {"username": "T0001", "password": "..."},
      "wiring": [{"unit": 1, "profile": "IM-100"}, {"unit": 2, "profile": "PM-300"}]
    }

The schema belongs to the terminal (``edge/config.py``, which documents the
optional keys); the installer runs the terminal's own validator on the file
so it refuses exactly what the terminal would refuse at boot, before the
board is touched. Error messages name keys, never values, so a password
cannot leak into a terminal log or a ticket.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge import config as terminal_config
from edge.errors import ConfigError
from edge.installer.errors import SiteConfigError

# Where the file goes on the board (root of its flash), as the terminal reads it.
BOARD_PATH = terminal_config.SITE_FILE

REQUIRED_KEYS = ("terminal_id", "broker", "credentials", "wiring")


def load(path: Path) -> tuple[bytes, dict]:
    """Read and check a site file; return its exact bytes and the parsed object.

    The bytes are what gets flashed (byte for byte, so the hash read back
    from the board can be compared). Raises SiteConfigError.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise SiteConfigError("site file %s does not exist" % path) from err
    except OSError as err:
        raise SiteConfigError("cannot read site file %s: %s" % (path, err.strerror)) from err
    try:
        site = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise SiteConfigError("site file %s is not UTF-8 text" % path) from err
    except json.JSONDecodeError as err:
        # The position, not the excerpt: the excerpt could be the password.
        raise SiteConfigError(
            "site file %s is not valid JSON (line %d, column %d: %s)"
            % (path, err.lineno, err.colno, err.msg)
        ) from err
    check(site, str(path))
    return raw, site


def check(site: object, name: str = "site file") -> dict:
    """Return the terminal's normalized site part; SiteConfigError naming the bad key."""
    if not isinstance(site, dict):
        raise SiteConfigError("%s: top level must be a JSON object" % name)
    missing = [key for key in REQUIRED_KEYS if key not in site]
    if missing:
        raise SiteConfigError("%s: missing required key(s): %s" % (name, ", ".join(missing)))
    try:
        return terminal_config.validate_site(site, path="")
    except ConfigError as err:
        raise SiteConfigError("%s: %s" % (name, err)) from err
