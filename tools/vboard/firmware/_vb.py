# Virtual board firmware: the calls every bridged module makes to the board's
# hardware (tools/virtual_board.mjs), through the `_vboard` JavaScript module
# the CPU worker registers.
#
# A request goes to the hardware thread and this interpreter blocks (Atomics.wait)
# until the answer: that is real blocking, as in the ESP32 port's C modules. A
# negative answer is -errno with the ESP32's (newlib) numbers, or EXC with the
# exception text in _vboard.text(). Ctrl-C on the console makes the pending call
# return at once and the interpreter raise KeyboardInterrupt right after it.
import _vboard
import uctypes

EXC = -99999


def _addr(data):
    return uctypes.addressof(data) if len(data) else 0


def fail(r):
    if r == EXC:
        kind, _, text = _vboard.text().partition(":")
        if kind == "ValueError":
            raise ValueError(text)
        if kind == "TypeError":
            raise TypeError(text)
        code, _, what = text.partition(" ")
        if code.lstrip(
            "-"
        ).isdigit():  # a numbered error: OSError(-202), OSError(-29312, "SSL - ...")
            raise OSError(int(code), what) if what else OSError(int(code))
        raise OSError(text)
    raise OSError(-r)


def call(op, s="", a=0, b=0, c=0, data=None):
    """Request ``op``; ``data`` (bytes-like or str) goes with it. Returns the
    non-negative answer or raises OSError/ValueError."""
    if data is None:
        r = _vboard.rpc(op, s, a, b, c, 0, 0)
    else:
        if isinstance(data, str):
            data = data.encode()
        r = _vboard.rpc(op, s, a, b, c, _addr(data), len(data))
    if r < 0:
        fail(r)
    return r


def fetch(op, buf, s="", a=0, b=0, c=0):
    """Request ``op`` and copy the bytes it answers into ``buf``; returns their count."""
    r = _vboard.rpcin(op, s, a, b, c, _addr(buf), len(buf))
    if r < 0:
        fail(r)
    return r


def query(op, s="", a=0, b=0, c=0):
    """Request ``op``; return the text it answers (JSON for structured answers)."""
    call(op, s, a, b, c)
    return _vboard.text()
