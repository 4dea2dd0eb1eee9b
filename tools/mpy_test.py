"""Run ``tests/mpy`` modules under real MicroPython (WebAssembly port on Node.js).

usage: python tools/mpy_test.py [tests/mpy/test_x.py ...]

Without arguments every ``tests/mpy/test_*.py`` runs. The interpreter comes
from the npm registry (``make deps`` installs it into ``node_modules``);
when Node.js or the package is missing this exits with status 2 and says
what to install, it never pretends the tests passed.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


def main(argv: list[str]) -> int:
    node = shutil.which("node")
    if node is None:
        print("error: Node.js is not installed; the MicroPython tier needs it", file=sys.stderr)
        return 2
    if not RUNTIME.is_dir():
        print("error: MicroPython runtime missing; run 'make deps' (npm install)", file=sys.stderr)
        return 2
    found = (ROOT / "tests" / "mpy").glob("test_*.py")
    files = argv or sorted(str(p.relative_to(ROOT)) for p in found)
    if not files:
        print("error: no MicroPython test modules found", file=sys.stderr)
        return 2
    cmd = [node, str(ROOT / "tools" / "mpy_run.mjs"), str(ROOT), *files]
    return subprocess.call(cmd, cwd=ROOT, env=dict(os.environ))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
