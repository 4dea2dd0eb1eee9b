"""Third-party device modules a bundle can carry, fetched from the package registry.

The terminal talks MQTT through micropython-lib's ``umqtt.simple``. Most
ESP32 firmware builds freeze it; for a board whose firmware does not,
``mimamori-install build --with-umqtt`` puts it in the bundle. It comes from
PyPI as ``micropython-umqtt.simple`` (the release there is 1.3.4; the board
HAL works with it and with micropython-lib's >= 1.4). Its source
distribution is an upip archive (no setup.py, so pip cannot install it): it
is downloaded once through PyPI's JSON API, checked against the SHA-256
pinned here and kept in the user's cache directory; only ``umqtt/simple.py``
is taken from it. It is found through the index API pip uses (PEP 691,
JSON). Offline, ``--umqtt-sdist FILE`` names the archive instead.
Nothing third-party is kept in the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import urllib.request
from pathlib import Path

from edge.installer.errors import BuildError

UMQTT = {
    "name": "micropython-umqtt.simple",
    "version": "1.3.4",
    "sha256": "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f",
    "member": "umqtt/simple.py",
}
INDEX = "https://pypi.org/simple/{project}/"  # PEP 691 JSON index, as pip reads it
TIMEOUT_S = 60


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mimamori" / "pypi"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(pkg: dict[str, str]) -> bytes:
    """The pinned sdist from PyPI; BuildError when unreachable or not what was pinned."""
    project = re.sub(r"[-_.]+", "-", pkg["name"]).lower()
    wanted = "%s-%s.tar.gz" % (pkg["name"], pkg["version"])
    req = urllib.request.Request(  # noqa: S310 (a fixed https URL)
        INDEX.format(project=project), headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 (fixed https URL)
            index = json.load(resp)
        found = [f for f in index["files"] if f["filename"] == wanted]
        if not found:
            raise BuildError("PyPI has no %s" % wanted)
        with urllib.request.urlopen(found[0]["url"], timeout=TIMEOUT_S) as resp:  # noqa: S310
            return bytes(resp.read())
    except (OSError, ValueError, KeyError) as err:
        raise BuildError(
            "cannot fetch %s %s from PyPI (%s); download its archive elsewhere and pass "
            "--umqtt-sdist FILE" % (pkg["name"], pkg["version"], err)
        ) from err


def sdist(pkg: dict[str, str] = UMQTT, given: Path | None = None) -> bytes:
    """The package's source archive, checked against its pinned SHA-256.

    ``given``: a local copy of the archive (offline installers); otherwise the
    user's cache, filled from PyPI on first use. Raises BuildError.
    """
    if given is not None:
        try:
            data = Path(given).read_bytes()
        except OSError as err:
            raise BuildError("cannot read %s: %s" % (given, err.strerror)) from err
        source = str(given)
    else:
        cached = cache_dir() / ("%s-%s.tar.gz" % (pkg["name"], pkg["version"]))
        if cached.is_file() and _sha256(cached.read_bytes()) == pkg["sha256"]:
            return cached.read_bytes()
        data = _download(pkg)
        source = "PyPI"
        if _sha256(data) == pkg["sha256"]:
            cached.parent.mkdir(parents=True, exist_ok=True)
            # one part file per process: builds running side by side (parallel tests)
            tmp = cached.with_name("%s.%d.part" % (cached.name, os.getpid()))
            tmp.write_bytes(data)
            tmp.replace(cached)
    if _sha256(data) != pkg["sha256"]:
        raise BuildError(
            "%s from %s is not the pinned %s %s (SHA-256 differs): refusing it"
            % (pkg["name"], source, pkg["name"], pkg["version"])
        )
    return data


def umqtt_source(given: Path | None = None, pkg: dict[str, str] = UMQTT) -> bytes:
    """``umqtt/simple.py`` of the pinned micropython-umqtt.simple. Raises BuildError."""
    import io

    data = sdist(pkg, given)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith("/" + pkg["member"]):
                f = tar.extractfile(member)
                if f is not None:
                    return f.read()
    raise BuildError("%s has no %s" % (pkg["name"], pkg["member"]))
