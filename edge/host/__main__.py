"""Run a virtual terminal: the real agent on the host HAL.

    python -m edge.host --site site.json --state-dir DIR [--sensors PTY|tcp://HOST:PORT]

The site file is checked with the terminal's own validator and copied into
the state directory (as the installer puts it on a board), which then also
holds the boot counter, the cloud config and the flash outbox: restart the
command with the same directory and it carries on as a rebooted terminal.
A ``reboot`` command from the cloud restarts the agent in this process.
SIGTERM or SIGINT stops it: the open batch goes to the outbox and the
connection is dropped without DISCONNECT, so the broker publishes the
terminal's death frame. Exit status: 0 stopped, 2 bad arguments or site, 137 after
a simulated power cut (``--power-cut-at``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from edge import loader
from edge.agent import Agent
from edge.config import SITE_FILE, validate_site
from edge.errors import ConfigError
from edge.host.hal import HostHal, Reboot


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m edge.host",
        description="Run a mimamori virtual terminal: the terminal agent with "
        "pyserial/TCP sensors and a paho-mqtt uplink.",
    )
    p.add_argument(
        "--site",
        type=Path,
        help="site configuration (JSON, as for mimamori-install); copied into "
        "the state directory. Default: the one already there",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        help="the terminal's flash: boot counter, config, outbox (created if missing)",
    )
    p.add_argument(
        "--sensors",
        metavar="PTY|tcp://HOST:PORT",
        help="RS-485 bus: a serial port or pty (firmware_sim serve --pty), or "
        "Modbus RTU over TCP. Default: no bus (every channel unreachable)",
    )
    p.add_argument(
        "--ca",
        metavar="FILE",
        help="CA certificate(s) to trust for a TLS broker (default: system CAs)",
    )
    p.add_argument(
        "--mqtt-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for CONNACK/SUBACK/PUBACK (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, help="seed for the reconnect jitter (tests)")
    p.add_argument(
        "--clock-offset",
        type=int,
        default=0,
        metavar="S",
        help="test fault: the terminal's RTC is S seconds off the host clock "
        '(with clock.ntp "" in the site the terminal cannot correct it)',
    )
    p.add_argument(
        "--power-cut-at",
        type=int,
        metavar="N",
        help="test fault: cut the power half-way through the N-th record "
        "appended to the outbox (exit status 137, like SIGKILL)",
    )
    p.add_argument(
        "--ota",
        action="store_true",
        help="start through the boot loader's choice (edge/loader.py) as a board does, so "
        "over-the-air updates run here too: staged, verified, switched, confirmed or rolled "
        "back on the state directory (the code that runs is this checkout's either way)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p.parse_args(argv)


def install_site(source: Path, state_dir: Path) -> None:
    """Validate ``source`` and put it in ``state_dir`` atomically. Raises ConfigError/OSError."""
    try:
        raw = source.read_bytes()
        site = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError("%s: not a JSON site file (%s)" % (source, err)) from err
    validate_site(site, path="site")
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / SITE_FILE
    if target.exists() and target.read_bytes() == raw:
        return
    tmp = target.with_name(SITE_FILE + ".tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = signum

    def log(text: str) -> None:
        if not args.quiet:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            print("%s %s" % (stamp, text), flush=True)

    try:
        if args.site is not None:
            install_site(args.site, args.state_dir)
        args.state_dir.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as err:
        print("error: %s" % err, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hal = HostHal(
        args.sensors,
        ca=args.ca,
        timeout=args.mqtt_timeout,
        seed=args.seed,
        clock_offset=args.clock_offset,
        power_cut_at=args.power_cut_at,
    )
    while True:
        booted = None
        if args.ota:
            slot, trial = loader.choose(str(args.state_dir))
            booted = {"slot": slot, "trial": trial}
        try:
            agent = Agent(hal, str(args.state_dir), log=log, booted=booted)
        except (ConfigError, OSError, ValueError) as err:
            print("error: %s" % err, file=sys.stderr)
            return 2
        try:
            while stop["signal"] is None:
                wait = agent.step()
                if hal.power_cut:
                    # Power gone: no shutdown, no flush, no death frame of our own.
                    log("power cut")
                    os._exit(137)
                if wait > 0:
                    hal.sleep_ms(wait)
        except Reboot:
            log("rebooting")
            continue
        agent.shutdown()
        log("stopped (signal %d)" % stop["signal"])
        return 0


if __name__ == "__main__":
    sys.exit(main())
