"""A virtual ESP32-class MicroPython board on a pty: the Python handle.

``tools/virtual_board.mjs`` runs the real MicroPython (WebAssembly port on
Node.js) with the board's modules bridged to real things (its header lists
them and the control interface); :class:`VirtualBoard` gives it a serial line
and a handle: it creates a pty pair, hands the master side to Node.js and
gives the caller the slave path (``/dev/pts/N``), which mpremote and pyserial
open like a USB serial port. Both sides stay open here, so the board's line
never reads as hung up between two clients, and a board powered off and on
again keeps its port (as a USB serial adapter does)::

    with VirtualBoard(uarts={2: sensors_pty}, wlan=["site:pw"]) as board:
        run_tool("flash", "--port", board.port, ...)   # main.py starts the agent
        board.control(cmd="wlan", up=False)             # the access point fails
        board.power_cut(at_write=3, suffix=".seg")      # dies mid-write...
        board.restart()                                 # ...and powers on again
        print(board.console())                          # what it printed

The flash is a host directory (``flash_dir``), written through at every
write. A missing Node.js or MicroPython runtime raises :class:`BoardError`
naming what to install. Used by the tests (``tests/support/virtual_board.py``,
also a command-line board for manual use), the HIL suite and the demo
(``python -m firmware_sim boards``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import tty
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class BoardError(RuntimeError):
    """The board did not start, died, or refused a control request."""


def require_runtime() -> str:
    """The node executable; BoardError naming what to install when it or the runtime is missing."""
    node = shutil.which("node")
    if node is None:
        raise BoardError("Node.js is not installed; run 'make deps' as root")
    if not RUNTIME.is_dir():
        raise BoardError("MicroPython WebAssembly runtime missing; run 'make deps'")
    return node


SCRIPT = ROOT / "tools" / "virtual_board.mjs"


class VirtualBoard:
    """One virtual board; ``start()``/``stop()`` or a ``with`` block.

    ``flash_dir``: the board's filesystem (a fresh temporary one by default,
    kept until the object is garbage). ``flash_size``: bytes os.statvfs()
    reports. ``run_main``: run main.py at each reset, as a board does (False
    leaves it at the REPL). ``uarts``: UART id -> serial device (a pty path).
    ``wlan``: access points ``"SSID:KEY"``. ``dns``: name -> IPv4. ``routes``:
    ``"IP:PORT"`` the board uses -> ``(host, port)`` on this machine. ``rtc``:
    the RTC at power-on (``"2000"``, ``"host"``, ``"host+S"``). ``extra``: more
    command-line arguments of the script.
    """

    def __init__(
        self,
        flash_dir: Path | None = None,
        flash_size: int | None = None,
        run_main: bool = True,
        trace: bool = False,
        *,
        uarts: dict[int, str] | None = None,
        wlan: Iterable[str] = (),
        dns: dict[str, str] | None = None,
        routes: dict[str, tuple[str, int]] | None = None,
        rtc: str | None = None,
        extra: Iterable[str] = (),
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="vboard-")
        tmp = Path(self._tmp.name)
        self.flash_dir = Path(flash_dir) if flash_dir is not None else tmp / "flash"
        self.flash_size = flash_size
        self.run_main = run_main
        self.trace = trace
        self.uarts = dict(uarts or {})
        self.wlan = list(wlan)
        self.dns = dict(dns or {})
        self.routes = dict(routes or {})
        self.rtc = rtc
        self.extra = list(extra)
        self.port = ""
        self.log_path = tmp / "board.log"
        self.console_path = tmp / "console.log"
        self.control_address: tuple[str, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._master = -1
        self._slave = -1

    def __enter__(self) -> VirtualBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def command(self) -> list[str]:
        """The script's command line (without node and the console's descriptor)."""
        cmd = [str(SCRIPT), "--flash", str(self.flash_dir), "--control", "127.0.0.1:0"]
        cmd += ["--console-log", str(self.console_path)]
        if self.flash_size is not None:
            cmd += ["--flash-size", str(self.flash_size)]
        if not self.run_main:
            cmd.append("--no-main")
        if self.trace:
            cmd.append("--trace")
        for uid, dev in sorted(self.uarts.items()):
            cmd += ["--uart", f"{uid}={dev}"]
        for ap in self.wlan:
            cmd += ["--wlan", ap]
        for name, ip in sorted(self.dns.items()):
            cmd += ["--dns", f"{name}={ip}"]
        for virt, (host, port) in sorted(self.routes.items()):
            cmd += ["--route", f"{virt}={host}:{port}"]
        if self.rtc is not None:
            cmd += ["--rtc", self.rtc]
        return cmd + self.extra

    def start(self, timeout: float = 30.0) -> VirtualBoard:
        """Power on; return when its REPL is up (main.py may still run). BoardError if not."""
        node = require_runtime()
        if self._master < 0:
            self._master, self._slave = os.openpty()
            # Raw from the start: with the default echo the board would read
            # back its own banner before a client configures the line.
            tty.setraw(self._slave)
            self.port = os.ttyname(self._slave)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [node, *self.command(), "--fd", str(self._master)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                pass_fds=(self._master,),
            )
        self.control_address = None
        deadline = time.monotonic() + timeout
        while True:
            line = self._read_status(deadline)
            if line.startswith("control "):
                host, _, port = line.split()[1].rpartition(":")
                self.control_address = (host, int(port))
            elif line == "ready":
                return self
            else:
                text = self.log()
                self.stop()
                raise BoardError("virtual board did not start: %s" % text[-2000:])

    def _read_status(self, deadline: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return ""
            chunk = os.read(fd, 1)
            if not chunk:
                return ""
            data += chunk
        return data.decode().strip()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Switch it off (the flash keeps what was written); its exit status."""
        status = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            if proc.stdout is not None:
                proc.stdout.close()
            status = proc.returncode
        return status

    def restart(self, timeout: float = 30.0) -> VirtualBoard:
        """Power on again after :meth:`stop` or a power cut: same port, same flash."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Release the pty (after :meth:`stop`)."""
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_dead(self, timeout: float = 30.0) -> int:
        """Wait for the process to end by itself (a power cut); its return code."""
        assert self._proc is not None
        return self._proc.wait(timeout)

    # -- control interface
    def control(self, timeout: float = 10.0, **request: Any) -> dict[str, Any]:
        """One request of the control interface (see tools/virtual_board.mjs)."""
        if self.control_address is None:
            raise BoardError("the board is not running")
        with socket.create_connection(self.control_address, timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise BoardError("control connection closed")
                data += chunk
        reply: dict[str, Any] = json.loads(data)
        if not reply.get("ok"):
            raise BoardError("control %s: %s" % (request.get("cmd"), reply.get("error")))
        return reply

    def power_cut(self, at_write: int | None = None, suffix: str = "") -> None:
        """Cut the power now, or during the ``at_write``-th later flash write to a
        file ending in ``suffix`` (half of that write reaches the flash)."""
        if at_write is None:
            self.control(cmd="power_cut")
        else:
            self.control(cmd="power_cut", at_write=at_write, suffix=suffix)

    # -- what it said
    def log(self) -> str:
        """The board process's diagnostics (resets, power cuts, --trace)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def console(self) -> str:
        """Everything the board printed on its console since the first power-on."""
        try:
            return self.console_path.read_bytes().decode(errors="replace")
        except OSError:
            return ""

    def files(self) -> dict[str, bytes]:
        """The flash: relative path -> content."""
        if not self.flash_dir.is_dir():
            return {}
        return {
            p.relative_to(self.flash_dir).as_posix(): p.read_bytes()
            for p in sorted(self.flash_dir.rglob("*"))
            if p.is_file()
        }
