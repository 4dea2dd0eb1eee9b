"""``python -m firmware_sim``: serve simulated sensors on a pty, a serial port or TCP.

Once listening, ``serve`` prints one ``key value`` line per endpoint on
stdout, then ``ready``, so a parent process can wait for it::

    pty /dev/pts/7
    tcp 127.0.0.1:40211
    control 127.0.0.1:40212
    ready

SIGINT or SIGTERM (or the ``shutdown`` control command) stops it: links are
closed, ``stopped`` is printed and the exit status is 0. Startup failures
(bad device spec, port busy) exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TextIO

from . import boards, fleet, registers
from .bus import Bus
from .clock import SimClock
from .control import ControlServer, parse_time
from .devices import KINDS, kind_for
from .errors import ConfigError, SimError
from .links import DEFAULT_GAP, PtyLink, SerialLink, TcpLink
from .registers import names as model_names

log = logging.getLogger("firmware_sim")

EPILOG = """\
device specs:  KIND:UNIT[:NAME=VALUE,...]   e.g. insulation:1  meter:2:peak_kw=150
               MODEL:UNIT[:NAME=VALUE,...]  e.g. SDM630:2:baud=19200  XY-MD02:3
kinds:         insulation, meter, meter-cdab, thermo, di (physics); model=NAME picks
               the sensor profile it serves, baud=RATE the rate it listens at
               -- `python -m firmware_sim kinds` lists kinds, models and parameters

examples:
  python -m firmware_sim serve --pty --device insulation:1 --device SDM630:2 --speed 60
  python -m firmware_sim serve --tcp 127.0.0.1:5020 --device thermo:3 --control 127.0.0.1:5021
  python -m firmware_sim serve --port /dev/ttyUSB0 --baudrate 19200 --device di:4

The control channel takes one JSON object per line, e.g.
  {"cmd": "inject", "unit": 1, "fault": "slow", "delay_ms": 800}
  {"cmd": "set", "unit": 1, "point": "ior", "value": 35.0}
See firmware_sim/README.md for every command and fault.
"""


def parse_device(spec: str) -> tuple[str, int, dict[str, Any]]:
    """``KIND:UNIT[:NAME=VALUE,...]`` -> (kind, unit, params); ``ConfigError`` if malformed.

    KIND may be a model name; ``model`` takes a model name, ``baud`` an
    integer, every other parameter a number.
    """
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"device spec {spec!r} is not KIND:UNIT[:NAME=VALUE,...]")
    kind, unit_text = parts[0], parts[1]
    if kind not in KINDS and kind not in model_names():
        raise ConfigError(
            f"unknown device kind {kind!r}; known: {', '.join(KINDS)} "
            f"or a model ({', '.join(model_names())})"
        )
    try:
        unit = int(unit_text, 0)
    except ValueError:
        raise ConfigError(f"unit id {unit_text!r} in {spec!r} is not a number") from None
    params: dict[str, Any] = {}
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep:
                raise ConfigError(f"device parameter {item!r} is not NAME=VALUE")
            if name == "model":
                params[name] = value.strip()
                continue
            try:
                params[name] = int(value) if name == "baud" else float(value)
            except ValueError:
                what = "an integer" if name == "baud" else "a number"
                raise ConfigError(f"device parameter {item!r}: {value!r} is not {what}") from None
    return kind, unit, params


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ``[::1]:502`` for IPv6. ``ConfigError`` if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"address {text!r} is not HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"port {port!r} in {text!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"port {number} out of range")
    return host.strip("[]"), number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m firmware_sim",
        description="Simulated Modbus RTU sensors serving the sensor profiles of "
        "docs/sensors.md, with plausible physics and injectable faults.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve devices on one bus",
        description="Serve simulated devices sharing one Modbus RTU bus.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    links = serve.add_argument_group("links (at least one; all serve the same bus)")
    links.add_argument(
        "--pty", action="store_true", help="create a pty pair, print the terminal-side tty path"
    )
    links.add_argument(
        "--port", metavar="DEVICE", help="serve an existing serial port, e.g. /dev/ttyUSB0"
    )
    links.add_argument(
        "--baudrate",
        type=int,
        default=9600,
        help="for --port (default 9600, 8N1); devices answer at their own rate only (baud=)",
    )
    links.add_argument(
        "--tcp", metavar="HOST:PORT", help="Modbus RTU framing over TCP (port 0 = any free port)"
    )
    serve.add_argument(
        "--device",
        metavar="KIND:UNIT[:P=V,...]",
        action="append",
        required=True,
        help="a device on the bus (repeat for more)",
    )
    serve.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (0 = frozen; default 1)",
    )
    serve.add_argument(
        "--start",
        metavar="TIME",
        help="simulated start, ISO 8601 (naive = JST) or epoch seconds; default now",
    )
    serve.add_argument(
        "--seed", type=int, default=0, help="physics and fault dice seed (default 0)"
    )
    serve.add_argument(
        "--control", metavar="HOST:PORT", help="JSON-lines control socket (bind to loopback)"
    )
    serve.add_argument(
        "--gap-ms",
        type=float,
        default=DEFAULT_GAP * 1000,
        help="line silence that ends an unsized frame (default %(default)s)",
    )
    serve.add_argument(
        "-v", "--verbose", action="count", default=0, help="log more (-vv for pymodbus too)"
    )
    commands.add_parser("kinds", help="list device kinds, models, points and parameters")
    fleet.add_parsers(commands)
    boards.add_parser(commands)
    return parser


def _print(out: TextIO, *words: Any) -> None:
    out.write(" ".join(str(w) for w in words) + "\n")
    out.flush()


def list_kinds(out: TextIO) -> None:
    for kind, cls in KINDS.items():
        # A negative default means "derived from the seed" (the meter's initial kWh).
        params = ", ".join(f"{k}={v:g}" if v >= 0 else f"{k}=auto" for k, v in cls.params.items())
        _print(out, f"{kind}: default model {cls.default_model}; parameters: {params or 'none'}")
    for name in model_names():
        model = registers.model(name)
        status = f" ({model.status})" if model.status != "documented" else ""
        _print(out, f"{name}{status}: kind {kind_for(name)}, {model.baud} baud")
        for p in model.points:
            order = f" {p.word_order}" if p.width == 2 else ""
            scale = f" x{p.scale:g}" if p.scale is not None else f" exp {p.exp}"
            _print(out, f"  {p.name:4} FC{p.fc} @{p.address:<5} {p.type}{order}{scale} {p.unit}")


async def serve(args: argparse.Namespace, out: TextIO) -> int:
    """Run until a signal or a shutdown command; return the exit status."""
    if not (args.pty or args.port or args.tcp):
        raise ConfigError("give at least one link: --pty, --port DEVICE or --tcp HOST:PORT")
    specs = [parse_device(s) for s in args.device]
    start = parse_time(args.start) if args.start else None
    clock = SimClock(start=start, speed=args.speed)
    bus = Bus(clock, seed=args.seed)
    for kind, unit, params in specs:
        bus.add(kind, unit, **params)
    gap = args.gap_ms / 1000.0
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    closers: list[Callable[[], Awaitable[None] | None]] = []
    try:
        if args.pty:
            pty = PtyLink(bus, gap)
            closers.append(pty.close)
            _print(out, "pty", pty.name)
        if args.port:
            serial_link = SerialLink(bus, args.port, args.baudrate, gap)
            closers.append(serial_link.close)
            _print(out, "port", serial_link.name)
        if args.tcp:
            tcp = await TcpLink.open(bus, *parse_address(args.tcp), gap=gap)
            closers.append(tcp.close)
            _print(out, "tcp", f"{tcp.address[0]}:{tcp.address[1]}")
        if args.control:
            control = await ControlServer.open(bus, *parse_address(args.control), stop.set)
            closers.append(control.close)
            _print(out, "control", f"{control.address[0]}:{control.address[1]}")
        units = ", ".join(f"{d.unit}={d.kind}" for d in bus.devices())
        log.info("serving %s at speed %g from %s", units, clock.speed, clock.now())
        _print(out, "ready")
        await stop.wait()
    finally:
        for close in reversed(closers):
            result = close()
            if inspect.isawaitable(result):
                await result
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _print(out, "stopped")
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point; returns the exit status (2 for a bad setting or a link that cannot open)."""
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    if args.command == "kinds":
        list_kinds(out)
        return 0
    if args.command == "boards":
        try:
            return boards.boards_command(args, out)
        except (SimError, OSError) as err:
            print(f"firmware_sim: error: {err}", file=sys.stderr)
            return 2
    if args.command in ("fleet", "fleet-accounts"):
        run = fleet.fleet_command if args.command == "fleet" else fleet.accounts_command
        try:
            return run(args, out)
        except (SimError, OSError) as err:
            print(f"firmware_sim: error: {err}", file=sys.stderr)
            return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pymodbus warns about every malformed request, which a fault test sends on purpose.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if args.verbose >= 2 else logging.ERROR)
    try:
        return asyncio.run(serve(args, out))
    except (SimError, OSError) as err:
        print(f"firmware_sim: error: {err}", file=sys.stderr)
        return 2
