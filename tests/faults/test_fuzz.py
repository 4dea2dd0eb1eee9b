"""Coverage-guided fuzzing (atheris, libFuzzer) of the two decoders that read
bytes from outside: the frame decoder (device and cloud side) and the
Modbus RTU reply parser. Only ProtocolError / the typed Modbus errors may
escape; a crash makes libFuzzer exit non-zero and leave a crash-* file.

Short profile: RUNS inputs per harness; ``MIMAMORI_PROFILE=long``: a million.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import faults as F

RUNS = F.profile(20_000, 1_000_000)


# A million runs take minutes: more than the suite's 300 s per test, so the
# long profile waits as long as the harness may run (below) and a little more.
@pytest.mark.timeout(F.profile(300, 3700))
@pytest.mark.parametrize("harness", ["fuzz_frames", "fuzz_modbus"])
def test_fuzz_harness(harness: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(F.ROOT / "fuzz" / f"{harness}.py"),
            f"-runs={RUNS}",
            "-seed=8105",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=F.ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    out = done.stdout + done.stderr
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    found = re.search(r"Done (\d+) runs in (\d+) second", out)
    F.Report(
        harness,
        runs=int(found.group(1)) if found else 0,
        seconds=int(found.group(2)) if found else None,
        exit=done.returncode,
        crashes=crashes,
    ).write()
    assert done.returncode == 0 and not crashes, out[-4000:]
    assert found and int(found.group(1)) == RUNS, out[-2000:]
