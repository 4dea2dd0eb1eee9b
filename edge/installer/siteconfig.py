"""The terminal's site configuration file and its profile files, checked before a board is touched.

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

A site's own sensor profiles (``docs/sensors.md``) are files in the
``profiles/`` directory beside the site file (``.json`` or ``.toml``) or
given on the command line; :func:`site_profiles` reads and checks them, and
they count when the wiring is checked. On the board they are
``profiles/<MODEL>.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edge import config as terminal_config
from edge import profiles
from edge.errors import ConfigError
from edge.installer import profilefile
from edge.installer.errors import ProfileError, SiteConfigError

# Where the file goes on the board (root of its flash), as the terminal reads it.
BOARD_PATH = terminal_config.SITE_FILE

REQUIRED_KEYS = ("terminal_id", "broker", "credentials", "wiring")


class SiteProfile:
    """A site's profile file: the checked full profile and the object as written."""

    def __init__(self, path: Path, full: dict[str, Any], raw: dict[str, Any]) -> None:
        self.path = path
        self.full = full
        self.raw = raw

    @property
    def model(self) -> str:
        return self.full["model"]

    @property
    def board_path(self) -> str:
        """Where the terminal looks for it."""
        return "%s/%s.json" % (terminal_config.PROFILE_DIR, self.model)


def profile_dir(site_path: Path) -> Path:
    """The ``profiles/`` directory beside a site file."""
    return Path(site_path).parent / terminal_config.PROFILE_DIR


def site_profiles(
    site_path: Path | None = None, extra: list[Path] | tuple = ()
) -> list[SiteProfile]:
    """The site's profile files: ``profiles/*.json|toml`` beside ``site_path``, then ``extra``.

    Each is fully checked (:func:`edge.installer.profilefile.check`); its
    file name must be the model. Raises ProfileError (a UsageError) naming
    the file, or when two files define one model or a file a built-in one.
    """
    paths: list[Path] = []
    if site_path is not None and profile_dir(site_path).is_dir():
        paths += sorted(
            p for p in profile_dir(site_path).iterdir() if p.suffix in (".json", ".toml")
        )
    paths += [Path(p) for p in extra]
    out: list[SiteProfile] = []
    builtin = set(profiles.models_in(profiles.BUILTIN_DIR))
    for path in paths:
        raw = profilefile.read(path)
        full = profilefile.check(raw, str(path))
        if path.stem != full["model"]:
            raise ProfileError(
                "profile file %s holds model %r; name the file %s%s"
                % (path, full["model"], full["model"], path.suffix)
            )
        if full["model"] in builtin:
            raise ProfileError(
                "profile file %s: %r is built in; give the site's variant its own name"
                % (path, full["model"])
            )
        if any(o.model == full["model"] for o in out):
            if any(o.path.resolve() == path.resolve() for o in out):
                continue  # the same file twice (beside the site file and given again)
            raise ProfileError("profile %r is defined twice (%s)" % (full["model"], path))
        out.append(SiteProfile(path, full, raw))
    return out


def load(path: Path, extra: list[SiteProfile] | tuple = ()) -> tuple[bytes, dict]:
    """Read and check a site file; return its exact bytes and the parsed object.

    The bytes are what gets flashed (byte for byte, so the hash read back
    from the board can be compared). ``extra`` are the site's profile files
    the wiring may name. Raises SiteConfigError.
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
    check(site, str(path), extra)
    return raw, site


def check(site: object, name: str = "site file", extra: list[SiteProfile] | tuple = ()) -> dict:
    """Return the terminal's normalized site part; SiteConfigError naming the bad key.

    ``extra`` are the site's profile files, as the terminal will find them
    in its ``profiles/`` directory.
    """
    if not isinstance(site, dict):
        raise SiteConfigError("%s: top level must be a JSON object" % name)
    missing = [key for key in REQUIRED_KEYS if key not in site]
    if missing:
        raise SiteConfigError("%s: missing required key(s): %s" % (name, ", ".join(missing)))
    try:
        points = None
        if extra:
            inline = site.get("profiles") or []
            if not isinstance(inline, list):
                raise ConfigError("profiles: must be a list")
            probe = dict(site, profiles=list(inline) + [p.raw for p in extra])
            points = terminal_config.site_points(
                terminal_config.validate_site(probe, path=""), "profiles"
            )
        return terminal_config.validate_site(site, points, path="")
    except ConfigError as err:
        raise SiteConfigError("%s: %s" % (name, err)) from err


def write(path: Path, site: dict[str, Any], error: type[Exception] = SiteConfigError) -> None:
    """Write a site file atomically (temp file + rename), mode 0600: it holds a password.

    Raises ``error`` (SiteConfigError by default) when the file cannot be written.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".site-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(site, f, indent=2, ensure_ascii=False)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        raise error("cannot write %s: %s" % (path, err.strerror)) from err
