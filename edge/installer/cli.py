"""``mimamori-install``: build, flash and probe mimamori terminals.

Exit status: 0 done, 1 the operation failed (message on stderr, one line),
2 bad usage (including an unusable site file). Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.installer.errors import InstallerError, UsageError

PROG = "mimamori-install"

DESCRIPTION = """\
Installer tools for mimamori monitoring terminals.

  build   compile the device code into a bundle (mpy-cross)
  flash   copy a bundle and the site configuration to a terminal (mpremote)
          and verify every file on the board by its SHA-256
  probe   scan the RS-485 bus for Modbus sensors and identify them
  profile check  read every point of a sensor profile once from a live bus
  provision  register a terminal with the cloud and write its site file

Run '%(prog)s COMMAND --help' for the options of a command."""


def parse_units(text: str) -> list[int]:
    """``"1-247"``, ``"1,2,10-12"`` -> sorted unit ids, each 1..247."""
    units: set[int] = set()
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first = int(lo)
            last = int(hi) if sep else first
            if not 1 <= first <= last <= 247:
                raise ValueError(part)
            units.update(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not a unit list like 1-247 or 1,2,5-9 (ids 1..247)" % text
        ) from None
    return sorted(units)


def parse_bauds(text: str) -> list[int]:
    """``"9600"``, ``"9600,19200"`` -> the baud rates, in the order given."""
    rates: list[int] = []
    try:
        for part in text.split(","):
            rate = int(part)
            if not 300 <= rate <= 1000000:
                raise ValueError(part)
            if rate not in rates:
                rates.append(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "%r is not a list of baud rates like 9600 or 9600,19200" % text
        ) from None
    return rates


def parse_choice(text: str) -> tuple[int, str]:
    """``"3=XY-MD02"`` -> (3, "XY-MD02")."""
    unit, sep, model = text.partition("=")
    try:
        number = int(unit)
    except ValueError:
        number = 0
    if not sep or not 1 <= number <= 247 or not model:
        raise argparse.ArgumentTypeError("%r is not UNIT=MODEL like 3=XY-MD02" % text)
    return number, model


def _number(kind: type, low: float, high: float) -> Callable[[str], object]:
    """argparse type: a ``kind`` number within ``low..high``."""

    def convert(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError("%s is out of range %g..%g" % (text, low, high))
        return value

    return convert


def thirdparty_version() -> str:
    from edge.installer.thirdparty import UMQTT

    return UMQTT["version"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = sub.add_parser(
        "build",
        help="compile the device code into a bundle",
        description="Compile every device file (protocol/, edge/ without edge/host and "
        "edge/installer) with mpy-cross into a bundle directory that mirrors the package "
        "layout, add the main.py boot file and a manifest.json with the SHA-256 of every "
        "file, the firmware version and the mpy-cross version. Building twice from the "
        "same sources gives identical files.",
    )
    build.add_argument(
        "--out",
        type=Path,
        default=Path("build/bundle"),
        metavar="DIR",
        help="bundle directory, replaced when the build succeeds (default: %(default)s)",
    )
    build.add_argument(
        "--source",
        type=Path,
        default=None,
        metavar="DIR",
        help="checkout holding protocol/ and edge/ (default: the one this tool runs from)",
    )
    build.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="KEY",
        help="an OTA public key (hex, or a .pub file from keygen) terminals running this "
        "bundle accept updates from; repeat for several (docs/ota.md, key rotation)",
    )
    build.add_argument(
        "--with-umqtt",
        action="store_true",
        help="add umqtt.simple (micropython-umqtt.simple %s from PyPI, checked against its "
        "pinned SHA-256, cached) for boards whose firmware does not freeze it"
        % thirdparty_version(),
    )
    build.add_argument(
        "--umqtt-sdist",
        type=Path,
        default=None,
        metavar="FILE",
        help="use this copy of the micropython-umqtt.simple archive instead of PyPI (offline)",
    )

    keygen = sub.add_parser(
        "keygen",
        help="make a key that signs bundles for over-the-air updates",
        description="Write a new Ed25519 signing key to FILE (mode 0600; an existing file "
        "is never overwritten) and its public key to FILE with the suffix .pub. Keep the "
        "key on the operator's machine: the cloud only needs the public key.",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="key file")

    sign = sub.add_parser(
        "sign",
        help="sign a bundle for over-the-air updates and pack it for upload",
        description="Check the bundle against its manifest, write manifest.sig (Ed25519 "
        "over the manifest's SHA-256) and a .tar archive to upload in the web site or "
        "with the API. Refuses a bundle that trusts no key (build --trust).",
    )
    sign.add_argument("--key", type=Path, required=True, metavar="FILE", help="signing key")
    sign.add_argument(
        "--bundle",
        type=Path,
        default=Path("build/bundle"),
        metavar="DIR",
        help="bundle directory (default: %(default)s)",
    )
    sign.add_argument(
        "--archive",
        type=Path,
        default=None,
        metavar="FILE",
        help="archive to write (default: mimamori-VERSION-ID.tar beside the bundle)",
    )

    flash = sub.add_parser(
        "flash",
        help="copy a bundle and the site configuration to a terminal",
        description="Copy a bundle (and the terminal's site configuration) to a MicroPython "
        "board with mpremote, read back the SHA-256 of every file on the board and compare "
        "it with the manifest, then soft-reset the board so it starts the agent. The bundle "
        "and the site file are checked before the board is touched; files the board already "
        "has are not copied again; stale modules in protocol/ and edge/ on the board are "
        "removed, and so is ota/ (the state and copies of over-the-air updates), so the "
        "flashed version is the one that starts. The site password is never printed.",
    )
    flash.add_argument(
        "--port",
        required=True,
        metavar="PORT",
        help="serial port of the board, e.g. /dev/ttyUSB0 or /dev/ttyACM0",
    )
    flash.add_argument(
        "--bundle",
        type=Path,
        default=Path("build/bundle"),
        metavar="DIR",
        help="bundle made by 'build' (default: %(default)s)",
    )
    flash.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="FILE",
        help="site configuration JSON for this terminal (terminal_id, broker, "
        "credentials, wiring); copied to the board as site.json",
    )
    flash.add_argument(
        "--board-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the board's wiring and network JSON (uart pins, wlan ssid/password, "
        "mqtt_timeout); copied to the board as board.json",
    )
    flash.add_argument(
        "--ca",
        type=Path,
        default=None,
        metavar="FILE",
        help="CA certificate (PEM) the terminal trusts for a TLS broker; copied as ca.pem",
    )
    flash.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a site sensor profile (.json or .toml) to copy to the board as "
        "profiles/MODEL.json; the profiles/ directory beside the site file is taken too",
    )
    flash.add_argument(
        "--baud",
        type=_number(int, 300, 4000000),
        default=115200,
        help="baud rate of the board's REPL UART (default: %(default)s)",
    )
    flash.add_argument(
        "--timeout",
        type=_number(float, 0.1, 600),
        default=5.0,
        metavar="SECONDS",
        help="how long the board may take to answer (default: %(default)s)",
    )
    flash.add_argument(
        "--force", action="store_true", help="rewrite every file, even those the board already has"
    )
    flash.add_argument(
        "--no-reset",
        dest="reset",
        action="store_false",
        help="leave the board at the REPL instead of restarting it",
    )

    probe = sub.add_parser(
        "probe",
        help="find and identify the sensors on the RS-485 bus",
        description="Try every unit id at each baud rate with the terminal's own Modbus "
        "master and identify what answers from what the devices document about "
        "themselves: Read Device Identification (FC 43/14) where they support it, the "
        "identification registers of each profile (a model name, the device's own address, "
        "its baud-rate code), then one reading of every point, checked for plausible values "
        "(80-480 V, 45-65 Hz, 0-100 %%RH, ...). Each unit is printed with its verdict "
        "(identified, a guess, ambiguous, unknown) and the evidence for the best candidates. "
        "With --site and --write the wiring of the identified units goes into the site file; "
        "guesses only when confirmed with --choose or --accept-guesses. Profiles: the built-in "
        "ones (docs/sensors.md), the profiles/ directory beside --site and --profile files.",
    )
    probe.add_argument(
        "--port",
        required=True,
        metavar="PORT",
        help="serial port of the RS-485 adapter, e.g. /dev/ttyUSB0",
    )
    # ranges as edge.bus.Bus accepts them
    probe.add_argument(
        "--baud",
        type=parse_bauds,
        default=None,
        metavar="RATES",
        help="baud rates to try, e.g. 9600 or 9600,19200 (default: 9600 and the factory "
        "rates of the known profiles)",
    )
    probe.add_argument(
        "--parity",
        choices=("N", "E", "O"),
        default="N",
        help="bus parity, 8 data bits, 1 stop bit (default: %(default)s)",
    )
    probe.add_argument(
        "--units",
        type=parse_units,
        default=parse_units("1-247"),
        metavar="LIST",
        help="unit ids to try, e.g. 1-247 or 1,2,5-9 (default: 1-247)",
    )
    probe.add_argument(
        "--timeout-ms",
        type=_number(int, 10, 10000),
        default=100,
        metavar="MS",
        help="reply timeout per request (default: %(default)s)",
    )
    probe.add_argument(
        "--profile",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a site sensor profile (.json or .toml) to consider as well (repeatable)",
    )
    probe.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="FILE",
        help="the site file: its profiles/ directory is considered; with --write the "
        "wiring goes into it (created if missing, for 'provision' to complete)",
    )
    probe.add_argument(
        "--write", action="store_true", help="write the identified units into --site's wiring"
    )
    probe.add_argument(
        "--choose",
        type=parse_choice,
        action="append",
        default=[],
        metavar="UNIT=MODEL",
        help="confirm (or correct) what a unit is, e.g. 3=XY-MD02 (repeatable)",
    )
    probe.add_argument(
        "--accept-guesses",
        action="store_true",
        help="write guessed units too (their verdict is still printed)",
    )

    prof = sub.add_parser(
        "profile",
        help="check a sensor profile file against a live device",
        description="Sensor profile files (docs/sensors.md): the register map of one model as "
        "JSON or TOML, which a site adds without a code change.",
    )
    prof_sub = prof.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    check = prof_sub.add_parser(
        "check",
        help="validate a profile and read every point once from a device",
        description="Validate FILE (every key; mistakes are named with the point and the key), "
        "then, with --port, read each identification register and each point of it once "
        "from the device at --unit and print the raw words, the engineering value and "
        "whether it is plausible. Exit 1 when a point does not answer or reads an implausible "
        "value, or an identification register contradicts the profile. FILE may also be the "
        "name of a built-in profile.",
    )
    check.add_argument(
        "file", metavar="FILE", help="profile file (.json or .toml) or built-in model"
    )
    check.add_argument(
        "--port", default=None, metavar="PORT", help="serial port of the RS-485 adapter"
    )
    check.add_argument(
        "--unit", type=_number(int, 1, 247), default=1, help="unit id (default: %(default)s)"
    )
    check.add_argument(
        "--baud",
        type=_number(int, 300, 1000000),
        default=None,
        help="bus baud rate (default: the profile's factory rate, else 9600)",
    )
    check.add_argument(
        "--parity", choices=("N", "E", "O"), default="N", help="bus parity (default: %(default)s)"
    )
    check.add_argument(
        "--timeout-ms",
        type=_number(int, 10, 10000),
        default=300,
        metavar="MS",
        help="reply timeout per request (default: %(default)s)",
    )
    prov = sub.add_parser(
        "provision",
        help="register a terminal with the cloud and write its site file",
        description="Register the terminal for a customer through the cloud's REST API "
        "(if it is not registered yet), have the cloud create its MQTT credentials, and "
        "write them with the broker address into the site file that 'flash' copies to the "
        "board. An existing site file keeps its wiring and tuning. The file is written "
        "readable by its owner only; the password is never printed.",
    )
    prov.add_argument(
        "--api",
        required=True,
        metavar="URL",
        help="the API base, e.g. https://cloud.example.net/api/v1",
    )
    prov.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="your API token (default: $MIMAMORI_API_TOKEN, which other "
        "users cannot see in the process list)",
    )
    prov.add_argument("--terminal-id", required=True, metavar="ID", help="terminal id")
    prov.add_argument(
        "--customer",
        required=True,
        type=_number(int, 1, 2**31 - 1),
        metavar="N",
        help="customer id the terminal belongs to",
    )
    prov.add_argument("--name", default="", help="terminal name shown to the customer")
    prov.add_argument(
        "--site-out",
        required=True,
        type=Path,
        metavar="FILE",
        help="site file to write (merged with it when it exists)",
    )
    prov.add_argument(
        "--rotate",
        action="store_true",
        help="replace existing credentials (the old password stops working)",
    )
    return parser


def _say(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.command == "build":
        from edge.installer import bundle
        from edge.installer.signing import read_public_key

        source = args.source if args.source is not None else bundle.SOURCE_ROOT
        trust = [read_public_key(k) for k in args.trust]
        _say("building %s from %s" % (args.out, source))
        extra = {}
        if args.with_umqtt or args.umqtt_sdist is not None:
            from edge.installer import thirdparty

            extra[thirdparty.UMQTT["member"]] = thirdparty.umqtt_source(args.umqtt_sdist)
        manifest = bundle.build(
            args.out, root=source, progress=lambda ln: _say("  " + ln), trust=trust, extra=extra
        )
        _say(
            "bundle %s: firmware %s, %d files, id %s, %s"
            % (
                args.out,
                manifest["firmware_version"],
                len(manifest["files"]),
                manifest["bundle_id"][:12],
                manifest["mpy_cross"],
            )
        )
        return 0
    if args.command == "keygen":
        from edge.installer.signing import keygen

        public = keygen(args.out)
        _say(
            "signing key %s (keep it safe, mode 0600); public key in %s:"
            % (args.out, args.out.with_suffix(".pub"))
        )
        _say(public)
        return 0
    if args.command == "sign":
        from edge.installer.signing import sign_bundle

        doc, archive = sign_bundle(args.bundle, args.key, args.archive)
        _say("signed %s with key %s...; upload %s" % (args.bundle, doc["key"][:16], archive))
        return 0
    if args.command == "flash":
        from edge.installer import flash

        summary = flash.flash(
            args.port,
            args.bundle,
            site=args.site,
            profiles=args.profile,
            board_config=args.board_config,
            ca=args.ca,
            baud=args.baud,
            timeout=args.timeout,
            reset=args.reset,
            force=args.force,
            progress=lambda ln: _say("  " + ln),
        )
        _say(
            "flashed %s: firmware %s (bundle %s), %d files verified, %d written, %d removed"
            % (
                args.port,
                summary["firmware_version"],
                str(summary["bundle_id"])[:12],
                summary["files"],
                summary["written"],
                len(summary["removed"]),
            )
            + (
                "; over-the-air update state removed (%d files in ota/)"
                % len(summary["ota_removed"])
                if summary["ota_removed"]
                else ""
            )
        )
        return 0
    if args.command == "probe":
        from edge.installer import probe, siteconfig, wiring

        site_extra = siteconfig.site_profiles(args.site, args.profile)
        found = probe.probe(
            args.port,
            bauds=args.baud,
            units=args.units,
            timeout_ms=args.timeout_ms,
            parity=args.parity,
            extra=[p.full for p in site_extra],
            progress=lambda ln: _say("  " + ln),
        )
        for line in probe.report(found):
            _say(line)
        if args.write or args.choose:
            if args.site is None:
                raise UsageError("--write and --choose need --site FILE")
            for line in wiring.write(
                args.site,
                found,
                site_extra,
                parity=args.parity,
                choose=dict(args.choose),
                accept_guesses=args.accept_guesses,
            ):
                _say(line)
        return 0
    if args.command == "profile":
        from edge.installer import probe, profilefile

        path = Path(args.file)
        full = profilefile.load(path) if path.suffix else profilefile.builtin(args.file)
        _say(
            "%s: valid profile, %d points, %d identification registers (%s)"
            % (
                args.file,
                len(full["points"]),
                len(full["ident"]),
                profilefile.status_note(full["status"]),
            )
        )
        if args.port is None:
            return 0
        ok, lines = probe.check_profile(
            args.port,
            full,
            args.unit,
            baud=args.baud or full["baud"] or 9600,
            parity=args.parity,
            timeout_ms=args.timeout_ms,
        )
        for line in lines:
            _say(line)
        return 0 if ok else 1
    if args.command == "provision":
        import os

        from edge.installer import provision

        api = provision.Api(args.api, args.token or os.environ.get("MIMAMORI_API_TOKEN", ""))
        site = provision.provision(
            api,
            args.terminal_id,
            args.customer,
            args.site_out,
            name=args.name,
            rotate=args.rotate,
            progress=lambda ln: _say("  " + ln),
        )
        _say(
            "provisioned %s: broker %s:%s%s, site file %s"
            % (
                site["terminal_id"],
                site["broker"]["host"],
                site["broker"].get("port"),
                " (TLS)" if site["broker"].get("tls") else "",
                args.site_out,
            )
        )
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``mimamori-install``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InstallerError as err:
        print("%s %s: error: %s" % (PROG, args.command, err), file=sys.stderr)
        return err.exit_status
    except KeyboardInterrupt:
        print("%s %s: interrupted" % (PROG, args.command), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
