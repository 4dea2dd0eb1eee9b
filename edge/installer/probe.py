"""Scan an RS-485 bus for Modbus sensors with the terminal's own Modbus master.

For each unit id: FC 3 read of holding register 9000 (model code, see
``docs/sensors.md``). A unit that answers is looked up in the terminal's
profile table (``edge.profiles``); for a known model the firmware revision
(register 9001) and one reading of every point are taken with the same read
plan and decoding the terminal uses, so what the probe shows is what the
terminal will see. A unit that answers with a Modbus exception exists (it
just has no model register); a damaged reply means something is there but
the line is bad. Silence means nobody has that id.

The master is :class:`edge.bus.Bus` over :class:`edge.host.serial_link.SerialLink`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from edge import bus as modbus_bus
from edge import profiles
from edge.errors import ConfigError
from edge.installer.board import why_unopenable
from edge.installer.errors import PortError, ProbeError, UsageError

Progress = Callable[[str], None]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    6: "device busy",
}
DAMAGED_TRIES = 3  # a garbled answer is worth asking again; silence is not


@dataclass
class Found:
    """One unit that answered. ``status`` is ``model``, ``exception`` or ``damaged``."""

    unit: int
    status: str
    code: int | None = None
    model: str = ""
    firmware: int | None = None
    reading: list[str] = field(default_factory=list)
    note: str = ""


def probe(
    port: str,
    *,
    baud: int = 9600,
    units: Iterable[int] = range(1, 248),
    timeout_ms: int = 100,
    parity: str = "N",
    progress: Progress = lambda line: None,
) -> list[Found]:
    """Scan ``units`` on the bus at ``port``; return the units that answered.

    Raises PortError (no such port, cannot open it, it failed), UsageError
    (a baud rate or timeout the master refuses), ProbeError (nobody answered).
    """
    from edge.host.serial_link import SerialLink

    units = list(units)
    if not os.path.exists(port):
        raise PortError("no such port %s" % port)
    try:
        link = SerialLink(port, baud=baud, parity=parity)
    except (OSError, ValueError) as err:
        raise PortError("cannot open %s: %s" % (port, why_unopenable(port))) from err
    started = time.monotonic()
    found: list[Found] = []
    with link:
        try:
            master = modbus_bus.Bus(
                link,
                link.ticks_ms,
                sleep_ms=link.sleep_ms,
                baud=baud,
                timeout_ms=timeout_ms,
                retries=0,
            )
        except ConfigError as err:
            raise UsageError(str(err)) from err
        table = profiles.profile_table()
        for i, unit in enumerate(units, 1):
            hit = probe_unit(master, table, unit)
            if hit is not None:
                found.append(hit)
                progress("unit %d: %s" % (unit, describe(hit)))
            if i % 50 == 0 and i < len(units):
                progress("%d of %d ids tried" % (i, len(units)))
    seconds = time.monotonic() - started
    if not found:
        raise ProbeError(
            "no unit answered on %s at %d baud, %s parity (%d ids tried in %.1f s): check the "
            "A/B wiring, termination, baud rate and parity"
            % (port, baud, parity, len(units), seconds)
        )
    progress("%d ids tried in %.1f s" % (len(units), seconds))
    return found


def probe_unit(master: modbus_bus.Bus, table: dict, unit: int) -> Found | None:
    """Ask one unit for its model and, if known, a reading; None when silent."""
    regs = [0]
    st = modbus_bus.TIMEOUT
    for _ in range(DAMAGED_TRIES):
        st = master.transfer(unit, 3, profiles.MODEL_REGISTER, 1, regs, retries=0)
        if st in (modbus_bus.OK, modbus_bus.EXCEPTION, modbus_bus.TIMEOUT):
            break
        if st == modbus_bus.LINK:
            raise PortError("the serial port failed while probing unit %d" % unit)
    if st == modbus_bus.TIMEOUT:
        return None
    if st == modbus_bus.EXCEPTION:
        code = master.last_exception
        return Found(
            unit,
            "exception",
            note="exception %d (%s) for register %d"
            % (code, EXCEPTION_NAMES.get(code, "?"), profiles.MODEL_REGISTER),
        )
    if st != modbus_bus.OK:
        return Found(
            unit,
            "damaged",
            note="replies are damaged (%s): check the line"
            % ("CRC" if st == modbus_bus.CRC else "frame: " + master.last_frame_error),
        )

    code = regs[0]
    hit = Found(unit, "model", code=code)
    if master.transfer(unit, 3, profiles.FIRMWARE_REGISTER, 1, regs, retries=1) == modbus_bus.OK:
        hit.firmware = regs[0]
    profile = profiles.find_by_code(table, code)
    if profile is None:
        hit.model = "unknown"
        return hit
    hit.model = profile["model"]
    hit.reading = sample(master, unit, profile)
    return hit


def sample(master: modbus_bus.Bus, unit: int, profile: dict) -> list[str]:
    """One reading of every point, ``name=value unit``, by the terminal's read plan."""
    points = profile["points"]
    shown = [""] * len(points)
    for fc, addr, count, items in profiles.plan_reads(profile):
        regs = [0] * count
        st = master.transfer(unit, fc, addr, count, regs, retries=1)
        for item in items:
            point = points[item[0]]
            if st == modbus_bus.OK:
                value = format_value(profiles.decode_point(item, regs), point)
            elif st == modbus_bus.EXCEPTION:
                value = "exception %d" % master.last_exception
            else:
                value = "no reply"
            shown[item[0]] = "%s=%s" % (point["name"], value)
    return shown


def format_value(raw: object, point: dict) -> str:
    """Engineering value of a raw reading: ``raw * 10**exp`` with its unit."""
    exp = point.get("exp", 0)
    if isinstance(raw, float):
        text = "%g" % raw
    elif exp < 0:
        text = "%.*f" % (-exp, int(raw) / 10**-exp)  # type: ignore[call-overload]
    else:
        text = str(int(raw) * 10**exp)  # type: ignore[call-overload]
    return text + (" " + point["unit"] if point.get("unit") else "")


def describe(hit: Found) -> str:
    if hit.status == "model":
        return "%s (0x%04x)" % (hit.model, hit.code or 0)
    return hit.note


def format_table(found: list[Found]) -> list[str]:
    """The result as aligned text lines: unit, model, code, firmware, reading."""
    rows = [("unit", "model", "code", "firmware", "reading")]
    for hit in found:
        if hit.status == "model":
            rows.append(
                (
                    str(hit.unit),
                    hit.model,
                    "0x%04x" % (hit.code or 0),
                    "-" if hit.firmware is None else "0x%04x" % hit.firmware,
                    "  ".join(hit.reading) if hit.reading else "-",
                )
            )
        else:
            rows.append((str(hit.unit), "?", "-", "-", hit.note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(
                [r[0].rjust(widths[0])] + [r[i].ljust(widths[i]) for i in (1, 2, 3)] + [r[4]]
            ).rstrip()
        )
    return lines
