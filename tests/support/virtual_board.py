"""A virtual MicroPython board on a pty, for tests of the installer tools.

``tools/virtual_board.mjs`` runs the real MicroPython (WebAssembly port on
Node.js) behind its REPL; this module gives it a serial line: it creates a
pty pair, hands the master side to Node.js and gives the test the slave
path (``/dev/pts/N``), which mpremote and pyserial open like a USB serial
port. The slave stays open here as well, so the board's line never reads as
hung up between two clients (as a board's UART is always there)::

    with VirtualBoard() as board:
        run_tool("flash", "--port", board.port)
        assert "edge/bus.mpy" in board.files()   # after stop(): board.flash_dir

A missing Node.js or MicroPython runtime raises RuntimeError naming what
to install; it is never a skip. Run as a script to get a board for manual
use: ``python tests/support/virtual_board.py [--flash DIR] [--trace]``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.micropython import ROOT, require_runtime

SCRIPT = ROOT / "tools" / "virtual_board.mjs"


class VirtualBoard:
    """One virtual board process; ``start()``/``stop()`` or a ``with`` block.

    ``flash_dir``: host directory loaded into the board's filesystem at start
    and replaced by its contents at stop (a fresh temporary one by default,
    kept until the object is garbage). ``flash_size``: bytes os.statvfs()
    reports (None: the script's default, 2 MiB). ``run_main``: run main.py
    after a soft reset in the friendly REPL (it cannot be interrupted there).
    """

    def __init__(
        self,
        flash_dir: Path | None = None,
        flash_size: int | None = None,
        run_main: bool = False,
        trace: bool = False,
    ) -> None:
        # Log (and default flash) live here until this object is garbage.
        self._tmp = tempfile.TemporaryDirectory(prefix="vboard-")
        tmp = Path(self._tmp.name)
        self.flash_dir = Path(flash_dir) if flash_dir is not None else tmp / "flash"
        self.flash_size = flash_size
        self.run_main = run_main
        self.trace = trace
        self.port = ""
        self.log_path = tmp / "board.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._slave = -1

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> VirtualBoard:
        """Start the board; return when its REPL is up. RuntimeError if it does not come up."""
        node = require_runtime()
        master, slave = os.openpty()
        # Raw from the start: with the default echo the board would read
        # back its own banner before a client configures the line.
        tty.setraw(slave)
        self._slave = slave
        self.port = os.ttyname(slave)
        cmd = [node, str(SCRIPT), "--fd", str(master), "--flash", str(self.flash_dir)]
        if self.flash_size is not None:
            cmd += ["--flash-size", str(self.flash_size)]
        if self.run_main:
            cmd.append("--run-main")
        if self.trace:
            cmd.append("--trace")
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(master,),
            )
        os.close(master)
        assert self._proc.stdout is not None
        if self._read_status(timeout) != "ready":
            log_text = self.log()
            self.stop()
            raise RuntimeError("virtual board did not start: %s" % log_text[-2000:])
        return self

    def _read_status(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            ready, _, _ = select.select([self._proc.stdout], [], [], left)
            if not ready:
                return ""
            chunk = os.read(self._proc.stdout.fileno(), 256)
            if not chunk:
                return ""
            data += chunk
        return data.split(b"\n", 1)[0].decode()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the board (its filesystem is saved to ``flash_dir``); return its exit status."""
        status = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    # Busy in Python code that never returns: nothing to save.
                    proc.kill()
                    proc.wait(timeout)
            if proc.stdout is not None:
                proc.stdout.close()
            status = proc.returncode
        if self._slave >= 0:
            os.close(self._slave)
            self._slave = -1
        return status

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """What the board process wrote on stderr (diagnostics, --trace output)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def files(self) -> dict[str, bytes]:
        """The saved filesystem after ``stop()``: relative path -> content."""
        if not self.flash_dir.is_dir():
            return {}
        return {
            p.relative_to(self.flash_dir).as_posix(): p.read_bytes()
            for p in sorted(self.flash_dir.rglob("*"))
            if p.is_file()
        }


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Serve a virtual MicroPython board on a pty.")
    parser.add_argument("--flash", type=Path, default=None, help="persist its filesystem here")
    parser.add_argument("--run-main", action="store_true", help="run main.py after soft reset")
    parser.add_argument("--trace", action="store_true", help="log every byte to the log file")
    args = parser.parse_args(argv)
    board = VirtualBoard(flash_dir=args.flash, run_main=args.run_main, trace=args.trace).start()
    print("port %s\nlog %s\nready (Ctrl-C stops)" % (board.port, board.log_path), flush=True)
    try:
        while board.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
