"""Flash a bundle and a site configuration to a terminal, then verify it.

Order of work, chosen so that a bad input never reaches the board and an
interrupted flash never leaves a board running half-updated code:

1. check the bundle against its manifest and the site file against its
   schema (nothing has touched the board yet);
2. open the board, refuse it if its MicroPython cannot load the bundle's
   .mpy format or its flash is too small;
3. read the SHA-256 of every target file on the board, so files that are
   already right are not copied again (a UART is slow);
4. remove ``main.py`` first, delete stale ``.py``/``.mpy`` files in the
   bundle's package directories (MicroPython imports ``x.py`` before
   ``x.mpy``, so a stale source would shadow the new code) and the state of
   over-the-air updates (``ota/``: while ``ota/boot.json`` names a slot,
   the boot loader starts that copy instead of the one flashed here; see
   edge/loader.py), copy what differs, and write ``main.py`` last;
5. read every file's SHA-256 back from the board and compare with the
   manifest; any difference fails the command naming the files;
6. soft-reset the board so it starts the agent (unless told not to).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import PROFILE_DIR
from edge.installer import profilefile, siteconfig
from edge.installer.board import Board
from edge.installer.bundle import DEVICE_PACKAGES, MANIFEST, check_bundle
from edge.installer.errors import BoardError, SiteConfigError, VerifyError

Progress = Callable[[str], None]

MAIN = "main.py"
BOARD_CONFIG = "board.json"  # the board HAL's wiring and network settings (edge/board/hal.py)
CA_FILE = "ca.pem"  # the CA the board HAL trusts for a TLS broker
BOARD_KEYS = {"uart", "wlan", "ca", "mqtt_timeout", "wlan_wait"}
OTA_DIR = "ota"  # updates over the air: the loader's boot.json, the job, the slots


def load_board_config(path: Path) -> bytes:
    """The exact bytes of a board.json, checked; SiteConfigError naming the problem."""
    try:
        raw = Path(path).read_bytes()
        cfg = json.loads(raw.decode("utf-8"))
    except OSError as err:
        raise SiteConfigError("cannot read board config %s: %s" % (path, err.strerror)) from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SiteConfigError("board config %s is not JSON: %s" % (path, err)) from err
    if not isinstance(cfg, dict):
        raise SiteConfigError("board config %s: top level must be a JSON object" % path)
    unknown = sorted(set(cfg) - BOARD_KEYS)
    if unknown:
        raise SiteConfigError("board config %s: unknown key(s) %s" % (path, ", ".join(unknown)))
    wlan = cfg.get("wlan")
    if wlan is not None and not (isinstance(wlan, dict) and isinstance(wlan.get("ssid"), str)):
        raise SiteConfigError("board config %s: wlan needs an ssid" % path)
    return raw


def load_ca(path: Path) -> bytes:
    """A PEM CA certificate file; SiteConfigError when it is not one."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise SiteConfigError("cannot read CA file %s: %s" % (path, err.strerror)) from err
    if b"-----BEGIN CERTIFICATE-----" not in raw:
        raise SiteConfigError("%s is not a PEM certificate" % path)
    return raw


def plan(
    bundle: Path,
    manifest: dict,
    site_bytes: bytes | None,
    profiles: list[siteconfig.SiteProfile] | tuple = (),
    board_files: dict[str, bytes] | None = None,
) -> list[tuple[str, bytes, str]]:
    """``(board path, content, sha256)`` in write order: packages, profiles, site
    (and the board's own configuration files, ``board_files``), manifest, main.py."""
    items = []
    for rel in sorted(manifest["files"]):
        if rel != MAIN:
            items.append((rel, (bundle / rel).read_bytes(), manifest["files"][rel]["sha256"]))
    for p in profiles:
        data = profilefile.board_json(p.raw)
        items.append((p.board_path, data, hashlib.sha256(data).hexdigest()))
    if site_bytes is not None:
        items.append((siteconfig.BOARD_PATH, site_bytes, hashlib.sha256(site_bytes).hexdigest()))
    for path, data in sorted((board_files or {}).items()):
        items.append((path, data, hashlib.sha256(data).hexdigest()))
    manifest_bytes = (bundle / MANIFEST).read_bytes()
    items.append((MANIFEST, manifest_bytes, hashlib.sha256(manifest_bytes).hexdigest()))
    if MAIN in manifest["files"]:
        items.append((MAIN, (bundle / MAIN).read_bytes(), manifest["files"][MAIN]["sha256"]))
    return items


def check_board(info: dict[str, Any], manifest: dict, need: int, freed: int = 0) -> None:
    """Refuse a board that cannot load the bundle or has no room for it
    (``freed``: bytes the flash removes before it writes)."""
    if info["name"] != "micropython":
        raise BoardError("the board runs %s, not MicroPython" % info["name"])
    mpy = int(info["mpy"])
    if mpy == 0:
        raise BoardError("the board does not report its .mpy version: its MicroPython is too old")
    board_format = "%d.%d" % (mpy & 0xFF, (mpy >> 8) & 3)
    if board_format != manifest.get("mpy_version"):
        raise BoardError(
            "the board loads .mpy v%s but the bundle is v%s (%s): update the board's "
            "MicroPython or build with a matching mpy-cross"
            % (board_format, manifest.get("mpy_version"), manifest.get("mpy_cross", "?"))
        )
    free = int(info["free"])
    if free >= 0 and need > free + freed:
        raise BoardError(
            "not enough flash on the board: %d bytes to write, %d free" % (need, free + freed)
        )


def flash(
    port: str,
    bundle: Path,
    *,
    site: Path | None = None,
    profiles: list[Path] | tuple = (),
    board_config: Path | None = None,
    ca: Path | None = None,
    baud: int = 115200,
    timeout: float = 5.0,
    reset: bool = True,
    force: bool = False,
    progress: Progress = lambda line: None,
) -> dict[str, Any]:
    """Copy ``bundle`` (and the ``site`` file, the ``board_config`` as board.json,
    the ``ca`` certificate as ca.pem) to the board on ``port`` and verify it.

    The site's profile files (the ``profiles/`` directory beside ``site``
    and ``profiles``) go to the board's ``profiles/`` as JSON; with a site
    file, profiles on the board it no longer has are removed. The board's
    ``ota/`` directory (updates over the air) is removed, so the flashed
    version is the one that starts. Returns a summary (counts, files
    removed, ``ota_removed``, board info). Raises BundleError, SiteConfigError or
    ProfileError before opening the port; PortError, BoardError while
    talking to the board; VerifyError when a file read back differs.
    ``force`` rewrites files the board already has.
    """
    bundle = Path(bundle)
    manifest = check_bundle(bundle)
    extra = siteconfig.site_profiles(site, list(profiles))
    site_bytes = siteconfig.load(site, extra)[0] if site is not None else None
    board_files = {}
    if board_config is not None:
        board_files[BOARD_CONFIG] = load_board_config(board_config)
    if ca is not None:
        board_files[CA_FILE] = load_ca(ca)
    items = plan(bundle, manifest, site_bytes, extra, board_files)
    width = len(str(len(items)))

    with Board(port, baud=baud, timeout=timeout) as board:
        info = board.info()
        progress(
            "board on %s: %s (%s)" % (port, info["version"].split("; ", 1)[-1], info["platform"])
        )

        check_board(info, manifest, need=0)  # can it load the bundle at all?
        on_board = {path: board.sha256(path) for path, _, _ in items}
        write = {path for path, _, sha in items if force or on_board[path] != sha}
        ota_files = board.files_under(OTA_DIR)
        check_board(
            info,
            manifest,
            sum(len(data) for path, data, _ in items if path in write),
            freed=board.bytes_under(OTA_DIR) if ota_files else 0,
        )

        wanted = {path for path, _, _ in items}
        stale = []
        for package in DEVICE_PACKAGES:
            for path in board.files_under(package):
                if path.endswith((".py", ".mpy")) and path not in wanted:
                    stale.append(path)
        if site is not None:
            for path in board.files_under(PROFILE_DIR):
                if path.endswith(".json") and path not in wanted:
                    stale.append(path)

        if (write or stale or ota_files) and MAIN in wanted:
            # Without main.py a board reset mid-flash stays at the REPL
            # instead of booting a mix of old and new modules.
            board.remove(MAIN)
            write.add(MAIN)
        for path in stale:
            board.remove(path)
            progress("removed stale %s" % path)
        if ota_files:
            # A cable install starts over: the version flashed here runs next,
            # not a copy an earlier update left (nor an update half done).
            board.remove_tree(OTA_DIR)
            progress(
                "removed %s/ (%d files: the state and copies of over-the-air updates): "
                "the board starts the version flashed now" % (OTA_DIR, len(ota_files))
            )

        for i, (path, data, _) in enumerate(items, 1):
            if path in write:
                parent = path.rpartition("/")[0]
                if parent:
                    board.makedirs(parent)
                board.write(path, data)
            state = "written" if path in write else "unchanged"
            progress(
                "copy   [%*d/%d] %-28s %7d B  %s" % (width, i, len(items), path, len(data), state)
            )

        bad = []
        for i, (path, _, sha) in enumerate(items, 1):
            got = board.sha256(path)
            ok = got == sha
            if not ok:
                bad.append(path if got is not None else path + " (missing)")
            progress(
                "verify [%*d/%d] %-28s %s"
                % (width, i, len(items), path, "ok" if ok else "MISMATCH")
            )
        if bad:
            raise VerifyError(
                "files on the board do not match the bundle: %s; flash again, and if it "
                "repeats the board's flash may be failing" % ", ".join(bad)
            )
        if reset:
            board.restart()
            progress("board restarted: it runs main.py now")

    return {
        "files": len(items),
        "written": len(write),
        "unchanged": len(items) - len(write),
        "removed": stale,
        "ota_removed": ota_files,
        "board": info,
        "firmware_version": manifest.get("firmware_version"),
        "bundle_id": manifest.get("bundle_id"),
    }
