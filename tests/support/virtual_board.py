"""A virtual ESP32-class MicroPython board on a pty, for tests and for measuring.

The handle lives in :mod:`firmware_sim.vboard` (the demo runs boards too);
this module re-exports it for the tests and is the command-line board.

``tools/virtual_board.mjs`` runs the real MicroPython (WebAssembly port on
Node.js) with the board's modules bridged to real things (its header lists
them and the control interface); this module gives it a serial line and a
handle: it creates a pty pair, hands the master side to Node.js and gives the
test the slave path (``/dev/pts/N``), which mpremote and pyserial open like a
USB serial port. Both sides stay open here, so the board's line never reads as
hung up between two clients, and a board powered off and on again keeps its
port (as a USB serial adapter does)::

    with VirtualBoard(uarts={2: sensors_pty}, wlan=["site:pw"]) as board:
        run_tool("flash", "--port", board.port, ...)   # main.py starts the agent
        board.control(cmd="wlan", up=False)             # the access point fails
        board.power_cut(at_write=3, suffix=".seg")      # dies mid-write...
        board.restart()                                 # ...and powers on again
        print(board.console())                          # what it printed

The flash is a host directory (``flash_dir``), written through at every
write. A missing Node.js or MicroPython runtime raises RuntimeError naming
what to install; it is never a skip. Run as a script to get a board for manual
use (``python tests/support/virtual_board.py --help``); heap figures, for
instance, come from its REPL (``mpremote connect PORT exec "import gc;
print(gc.mem_alloc())"``) or from the firmware's own report in :meth:`log`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from firmware_sim.vboard import SCRIPT, BoardError, VirtualBoard

__all__ = ["SCRIPT", "BoardError", "VirtualBoard", "main"]


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description="Serve a virtual MicroPython board on a pty (Ctrl-C stops it).",
        epilog="Other options of tools/virtual_board.mjs go after --, e.g. -- --rtc host.",
    )
    parser.add_argument("--flash", type=Path, default=None, help="its filesystem (a directory)")
    parser.add_argument("--no-main", action="store_true", help="do not run main.py at reset")
    parser.add_argument("--uart", action="append", default=[], metavar="ID=DEVICE")
    parser.add_argument("--wlan", action="append", default=[], metavar="SSID:KEY")
    parser.add_argument("--trace", action="store_true", help="log every console byte")
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    uarts = {int(u.split("=", 1)[0]): u.split("=", 1)[1] for u in args.uart}
    board = VirtualBoard(
        flash_dir=args.flash,
        run_main=not args.no_main,
        trace=args.trace,
        uarts=uarts,
        wlan=args.wlan,
        extra=args.extra,
    ).start()
    print(
        "port %s\ncontrol %s:%d\nflash %s\nlog %s\nconsole %s\nready (Ctrl-C stops)"
        % (
            board.port,
            *(board.control_address or ("-", 0)),
            board.flash_dir,
            board.log_path,
            board.console_path,
        ),
        flush=True,
    )
    try:
        while board.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        board.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
