"""A MicroPython board on a serial port, driven through mpremote's raw REPL.

This is the only module that touches mpremote. It uses mpremote 1.2x's
``SerialTransport`` as a library rather than running ``mpremote`` as a
subprocess, because the library lets us bound every wait: the command line
tool opens pty ports with no read timeout and would hang forever on a
silent port. Paths on the board are relative to its working directory
after a soft reset (``/`` on ESP32, ``/flash`` on pyboards), which is also
where MicroPython looks for ``main.py`` and for modules.

Failures raise :class:`PortError` (no such port, cannot open it),
:class:`BoardError` (no answer, unexpected answer, an error on the board).
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
from typing import Any

from edge.installer.errors import BoardError, PortError

# How long one read may block. The overall answer deadline is the caller's
# timeout; this only bounds how far past it a silent port can take us.
READ_TIMEOUT_S = 1.0

NO_ANSWER_HINT = (
    "check that the board is powered and not stuck in a boot loop, "
    "that this is its port, and the baud rate (--baud)"
)

# Defined on the board once per session; prints a hex SHA-256 or "-" when
# the file does not exist. Reads in small chunks: boards have little heap.
_BOARD_HELPERS = """
import os, hashlib, binascii
def _mm_sha(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return '-'
    h = hashlib.sha256()
    b = bytearray(256)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
def _mm_walk(d, out):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return out
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _mm_walk(p, out)
        else:
            out.append(p)
    return out
def _mm_rmtree(d):
    try:
        it = list(os.ilistdir(d))
    except OSError:
        return
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            _mm_rmtree(p)
        else:
            os.remove(p)
    os.rmdir(d)
"""

_INFO = """
import sys, os
try:
    _s = os.statvfs('.')
    _free = _s[0] * _s[4]
except Exception:
    _free = -1
print(repr((sys.implementation.name, sys.version, sys.platform,
            getattr(sys.implementation, '_mpy', 0), _free)))
"""


def _mpremote() -> tuple[Any, Any]:
    """mpremote's transport modules, imported late so `build` and `probe` work without it."""
    from mpremote import transport, transport_serial

    return transport, transport_serial


class Board:
    """An open raw-REPL session with one board; use as a context manager.

    ``timeout`` (seconds) bounds how long the board may take to answer the
    raw-REPL handshake; ``baud`` matters for USB-UART bridges only.
    """

    def __init__(self, port: str, baud: int = 115200, timeout: float = 5.0) -> None:
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self._transport: Any = None

    def __enter__(self) -> Board:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the port and enter the raw REPL after a soft reset.

        The soft reset (as ``mpremote`` does) stops a running agent and
        gives a clean interpreter; in the raw REPL a board does not run
        ``main.py`` after it.
        """
        transport, transport_serial = _mpremote()
        if not os.path.exists(self.port):
            raise PortError("no such port %s" % self.port)
        try:
            self._transport = transport_serial.SerialTransport(
                self.port, baudrate=self.baud, timeout=READ_TIMEOUT_S
            )
        except transport.TransportError as err:
            raise PortError("cannot open %s: %s" % (self.port, why_unopenable(self.port))) from err
        except (OSError, ValueError) as err:
            raise PortError("cannot open %s: %s" % (self.port, err)) from err
        said = io.StringIO()
        try:
            # mpremote prints what it received when the handshake fails; keep
            # it for our own message instead of letting it reach the terminal.
            with contextlib.redirect_stdout(said):
                self._transport.enter_raw_repl(soft_reset=True, timeout_overall=self.timeout)
        except transport.TransportError as err:
            self.close()
            got = said.getvalue().strip()
            if got in ("", "b''"):
                raise BoardError(
                    "board on %s does not answer (no reply within %g s): %s"
                    % (self.port, self.timeout, NO_ANSWER_HINT)
                ) from err
            raise BoardError(
                "board on %s does not enter the raw REPL within %g s (it sent %s): %s"
                % (self.port, self.timeout, _excerpt(got), NO_ANSWER_HINT)
            ) from err
        except OSError as err:
            self.close()
            raise PortError("lost %s: %s" % (self.port, err)) from err
        self.exec(_BOARD_HELPERS)

    def close(self) -> None:
        if self._transport is None:
            return
        transport, self._transport = self._transport, None
        with contextlib.suppress(Exception):
            if transport.in_raw_repl:
                transport.exit_raw_repl()
        with contextlib.suppress(Exception):
            transport.close()

    def exec(self, code: str) -> str:
        """Run ``code`` on the board; return its stdout. BoardError on any failure."""
        transport, _ = _mpremote()

        if self._transport is None:
            raise BoardError("board on %s is not open" % self.port)
        try:
            return bytes(self._transport.exec(code)).decode("utf-8", "replace")
        except transport.TransportExecError as err:
            lines = [ln for ln in err.error_output.strip().splitlines() if ln.strip()]
            raise BoardError(
                "error on the board: %s" % (lines[-1] if lines else "unknown")
            ) from err
        except transport.TransportError as err:
            raise BoardError("board on %s stopped answering: %s" % (self.port, err)) from err
        except OSError as err:
            raise PortError("lost %s: %s" % (self.port, err)) from err

    def eval(self, code: str) -> Any:
        """Run ``code`` that prints one Python literal; return its value."""
        out = self.exec(code).strip()
        try:
            return ast.literal_eval(out)
        except (ValueError, SyntaxError) as err:
            raise BoardError("unexpected answer from the board: %s" % _excerpt(out)) from err

    def info(self) -> dict[str, Any]:
        """Interpreter name, version banner, platform, .mpy ABI and free flash bytes."""
        name, version, platform, mpy, free = self.eval(_INFO)
        return {"name": name, "version": version, "platform": platform, "mpy": mpy, "free": free}

    def files_under(self, directory: str) -> list[str]:
        """Every file below ``directory`` on the board (relative paths); [] if absent."""
        found = self.eval("print(repr(_mm_walk(%r, [])))" % directory)
        return sorted(p[2:] if p.startswith("./") else p for p in found)

    def bytes_under(self, directory: str) -> int:
        """Total size of the files below ``directory`` (0 if absent)."""
        size = self.eval(
            "print(sum(os.stat(p)[6] for p in _mm_walk(%r, [])))" % directory.rstrip("/")
        )
        return int(size)

    def remove_tree(self, directory: str) -> None:
        """Remove ``directory`` with everything in it; nothing if absent."""
        self.exec("_mm_rmtree(%r)\n" % directory.rstrip("/"))

    def makedirs(self, directory: str) -> None:
        parts = [p for p in directory.split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            self.exec("try:\n os.stat(%r)\nexcept OSError:\n os.mkdir(%r)\n" % (sub, sub))

    def remove(self, path: str) -> None:
        self.exec("try:\n os.remove(%r)\nexcept OSError:\n pass\n" % path)

    def write(self, path: str, data: bytes) -> None:
        """Write a file with mpremote's chunked writer (256-byte raw-paste chunks)."""
        transport, _ = _mpremote()
        try:
            self._transport.fs_writefile(path, data)
        except transport.TransportError as err:
            raise BoardError("writing %s on the board failed: %s" % (path, err)) from err
        except OSError as err:
            raise BoardError("writing %s on the board failed: %s" % (path, err)) from err

    def sha256(self, path: str) -> str | None:
        """Hex SHA-256 of a file as the board reads it, or None when absent."""
        digest = self.exec("print(_mm_sha(%r))" % path).strip()
        if digest == "-":
            return None
        if len(digest) != 64:
            raise BoardError("unexpected hash from the board for %s: %s" % (path, _excerpt(digest)))
        return digest

    def restart(self) -> None:
        """Leave the raw REPL and soft-reset, so the board runs ``main.py``.

        Best effort: the board is not waited for (the agent it starts may
        never return to a prompt), and the session is closed.
        """
        if self._transport is None:
            return
        transport = self._transport
        with contextlib.suppress(Exception):
            transport.exit_raw_repl()
            transport.in_raw_repl = False
            transport.serial.write(b"\x04")
            transport.serial.flush()
        self.close()

    def reset(self) -> None:
        """Hard-reset the board (``machine.reset()``): it starts over and runs
        ``main.py``. Not waited for; the session is closed."""
        if self._transport is None:
            return
        with contextlib.suppress(Exception):
            self._transport.exec_raw_no_follow("import machine\nmachine.reset()")
        self.close()


def why_unopenable(port: str) -> str:
    """Reason a port cannot be opened (mpremote only says "failed to access")."""
    import errno

    import serial

    try:
        with serial.Serial(port, exclusive=True):
            pass
    except serial.SerialException as err:
        code = getattr(err, "errno", None)
        text = str(err)
        if code in (errno.EACCES, errno.EPERM):
            return "permission denied (add your user to the 'dialout' group)"
        if code == errno.EBUSY or "lock" in text:
            return "in use by another program"
        if code == errno.ENOTTY or "Inappropriate ioctl" in text or "termios" in text:
            return "not a serial port"
        return text
    except (OSError, ValueError) as err:
        return str(err)
    return "in use by another program, or it went away"


def _excerpt(text: str, limit: int = 80) -> str:
    text = text.replace("\r", "").strip()
    return repr(text if len(text) <= limit else "..." + text[-limit:])
