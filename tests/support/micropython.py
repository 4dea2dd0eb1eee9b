"""Run code under real MicroPython (the WebAssembly port on Node.js) from pytest.

The runtime is the npm package ``@micropython/micropython-webassembly-pyscript``
that ``make deps`` installs. A missing Node.js or package is a test failure
with the command that fixes it, never a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from edge.installer import bundle
from firmware_sim.vboard import require_runtime

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tools" / "mpy_run.mjs"


def run_modules(*modules: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run test modules (paths relative to the repo) under MicroPython."""
    node = require_runtime()
    return subprocess.run(
        [node, str(RUNNER), str(ROOT), *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def mpy_test_modules() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "mpy").glob("test_*.py"))


def device_files() -> list[str]:
    """Every file that must compile for and run on the terminal (the installer's list)."""
    return bundle.device_files(ROOT)


def version() -> str:
    """The interpreter banner, e.g. 'MicroPython v1.27.0 on 2025-12-10'."""
    node = require_runtime()
    script = (
        "import {loadMicroPython} from '@micropython/micropython-webassembly-pyscript';"
        "const mp = await loadMicroPython({stdout: (l) => console.log(l)});"
        "mp.runPython('import sys; print(sys.version)');"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return out.strip().split("; ", 1)[-1]
