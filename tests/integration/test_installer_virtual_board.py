"""The virtual board speaks the REPL protocol of a real one: checked with mpremote's own CLI.

If these pass, the flash tests exercise mpremote against MicroPython the
way a USB-connected board would, not against a lenient imitation.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from tests.support.installer import sha256
from tests.support.virtual_board import VirtualBoard

pytestmark = pytest.mark.integration

MPREMOTE = [sys.executable, "-m", "mpremote"]


def mpremote(port: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=60, check=False
    )


def read_until(port: serial.Serial, ending: bytes, timeout: float = 10) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(ending) and time.monotonic() < deadline:
        data += port.read(1)
    return data


def test_mpremote_exec_files_and_errors(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 20  # binary, and many raw-paste windows long
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    with VirtualBoard(flash_dir=tmp_path / "flash") as board:
        r = mpremote(board.port, "exec", "import sys; print(sys.implementation.name, 6 * 7)")
        assert (r.returncode, r.stdout) == (0, "micropython 42\n"), r.stderr
        r = mpremote(
            board.port,
            "fs",
            "mkdir",
            ":data",
            "+",
            "fs",
            "cp",
            str(src),
            ":data/blob.bin",
            "+",
            "fs",
            "sha256sum",
            ":data/blob.bin",
            "+",
            "fs",
            "ls",
            ":data",
        )
        assert r.returncode == 0, r.stderr
        assert sha256(payload) in r.stdout
        assert "5120 blob.bin" in r.stdout  # sizes listed as littlefs lists them
        # MicroPython errno numbers, so mpremote names the error as for a board
        r = mpremote(board.port, "fs", "cat", ":nope.txt")
        assert r.returncode == 1
        assert "No such file or directory" in r.stdout + r.stderr
        r = mpremote(board.port, "exec", "print('before'); 1/0")
        assert r.returncode == 1
        assert "before" in r.stdout and "ZeroDivisionError" in r.stdout + r.stderr
        # a soft reset gives a fresh interpreter on the same flash
        r = mpremote(
            board.port,
            "exec",
            "x = 5",
            "+",
            "soft-reset",
            "+",
            "exec",
            "print('x' in globals(), open('data/blob.bin', 'rb').read(3))",
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().endswith("False b'\\x00\\x01\\x02'")
    assert (tmp_path / "flash" / "data" / "blob.bin").read_bytes() == payload


def test_friendly_repl_and_main_py_after_soft_reset(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text("print('agent', 'started')\n")
    with VirtualBoard(flash_dir=flash, run_main=True) as board:
        with serial.Serial(board.port, 115200, timeout=0.2) as port:
            port.write(b"\x03")  # interrupt: a fresh prompt
            read_until(port, b">>> ")
            port.write(b"print(40 + 2)\r")
            # (the Ctrl-C may still be answered with a prompt of its own first)
            echo = read_until(port, b"42\r\n>>> ")
            assert b"print(40 + 2)\r\n42\r\n>>> " in echo
            port.write(b"\x04")  # soft reset: main.py runs, then the banner
            boot = read_until(port, b">>> ")
            assert b"MPY: soft reboot\r\nagent started\r\n" in boot
            assert b"MicroPython v1.27" in boot
