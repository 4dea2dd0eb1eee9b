"""Run ``mimamori-install`` as an installer would: a separate process, real exit status.

``python -m edge.installer`` from the repository root is the same entry
point as the ``mimamori-install`` console script (``edge.installer.cli:main``)
and does not depend on the editable install being current.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    status: int
    out: str
    err: str
    seconds: float


def run_tool(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> Result:
    """Run ``mimamori-install ARGS``; a hang is a test failure after ``timeout`` s."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "edge.installer", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def write_site(path: Path, **overrides: object) -> Path:
    """A valid site file (password ``pw-SECRET-0001``), with top-level keys replaced."""
    site: dict[str, object] = {
        "terminal_id": "T0001",
        "broker": {"host": "127.0.0.1", "port": 1883, "tls": False},
        "credentials": {"username": "T0001", "password": "pw-SECRET-0001"},
        "wiring": [{"unit": 1, "profile": "IM-100"}, {"unit": 2, "profile": "PM-300"}],
    }
    site.update(overrides)
    path.write_text(json.dumps(site, indent=1))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
