"""Find the Modbus sensors on an RS-485 bus and say, with evidence, what each one is.

Nothing here relies on a register a device does not document. For every
baud rate and unit id:

1. *Presence.* Read Device Identification (FC 43 / MEI 14, basic objects)
   and, if that goes unanswered, the first register of each candidate
   profile. Any reply, an exception included, means a device is there; a
   reply that stays damaged means the line is bad; silence means nobody.
2. *Evidence, per candidate profile* (the built-in ones and the site's):
   its documented identification registers (``ident``: a model name, the
   device's own address, the code of the baud rate in use, a serial number),
   the FC 43 product code against its ``mei``, then one reading of every
   point with the terminal's own read plan and decoding, checked against the
   plausible range of its kind (80-480 V, 45-65 Hz, 0-100 %RH, ...).
3. *Verdict.* ``identified`` when a documented identification matches and
   nothing contradicts it; ``guess`` when only readings and plausibility
   point to the best candidate; ``ambiguous`` when the best two are too
   close to tell; ``unknown`` when nothing fits. A guess is never passed
   off as an identification: the verdict and the evidence are printed, and
   the site file only takes guesses the installer confirms.

The Modbus master is the terminal's own (:class:`edge.bus.Bus` over
:class:`edge.host.serial_link.SerialLink`), so a reading shown is what the
terminal will read. FC 43 is not something the terminal needs, so it is
framed here with pymodbus's PDU classes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse

from edge import bus as modbus_bus
from edge import profiles
from edge.errors import ConfigError
from edge.installer import profilefile
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

# Weights of the evidence (see the module docstring for the verdicts).
W_DEFINITIVE = 10.0  # a model name, a product code, a fixed model code matches
W_SETTING = 4.0  # the device's own address or baud-rate code matches
W_CONTRADICTS = -10.0  # an identification register holds something else
W_UNANSWERED = -3.0  # an identification register is not there
W_PLAUSIBLE = 1.0
W_ANSWERED = 0.5  # a value with no known plausible range
W_IMPLAUSIBLE = -2.0
W_FAILED = -2.0
CLOSE = 1.0  # scores nearer than this cannot be told apart

IDENTIFIED = "identified"
GUESS = "guess"
AMBIGUOUS = "ambiguous"
UNKNOWN = "unknown"
DAMAGED = "damaged"


@dataclass
class Evidence:
    """One observation about a candidate; ``weight`` > 0 supports it, < 0 speaks against."""

    text: str
    weight: float
    definitive: bool = False


@dataclass
class Candidate:
    """A profile tried on a unit, with what was seen."""

    model: str
    label: str
    status: str
    evidence: list[Evidence] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(e.weight for e in self.evidence)

    @property
    def definitive(self) -> bool:
        return any(e.definitive for e in self.evidence)

    @property
    def contradicted(self) -> bool:
        return any(e.weight <= W_CONTRADICTS for e in self.evidence)


@dataclass
class Found:
    """A unit that answered at ``baud``: its verdict and the ranked candidates."""

    unit: int
    baud: int
    verdict: str
    candidates: list[Candidate] = field(default_factory=list)
    note: str = ""

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def model(self) -> str:
        """The best candidate's model when the verdict names one, else ``""``."""
        if self.verdict in (IDENTIFIED, GUESS, AMBIGUOUS) and self.best is not None:
            return self.best.model
        return ""


class Prober:
    """Identification of units on one open bus at one baud rate.

    ``table`` is ``{model: full profile}`` (:func:`edge.installer.profilefile.catalogue`).
    """

    def __init__(
        self, master: modbus_bus.Bus, link: Any, table: dict[str, dict[str, Any]], baud: int
    ) -> None:
        self.master = master
        self.link = link
        self.table = table
        self.baud = baud
        self._framer = FramerRTU(DecodePDU(False))
        # what is asked when FC 43 goes unanswered: the first register of each
        # profile (a device answers a read of one register, or refuses it)
        seen: list[tuple[int, int, int]] = []
        for profile in table.values():
            fc, addr, _, _ = profiles.plan_reads(profile)[0]
            if (fc, addr, 1) not in seen:
                seen.append((fc, addr, 1))
        self._presence = seen

    # -- presence ---------------------------------------------------------------

    def transfer(self, unit: int, fc: int, addr: int, count: int) -> tuple[int, list[int]]:
        """One read, asked again while the reply is damaged: ``(status, registers)``.

        Raises PortError when the serial port itself fails.
        """
        regs = [0] * count
        st = modbus_bus.TIMEOUT
        for _ in range(DAMAGED_TRIES):
            st = self.master.transfer(unit, fc, addr, count, regs, retries=0)
            if st in (modbus_bus.OK, modbus_bus.EXCEPTION, modbus_bus.TIMEOUT):
                break
            if st == modbus_bus.LINK:
                raise PortError("the serial port failed while probing unit %d" % unit)
        return st, regs

    def device_identification(self, unit: int) -> tuple[str, dict[int, str]]:
        """FC 43 / MEI 14 basic objects: ``("ok", {id: text})``, ``("exception", {})``,
        ``("silent", {})`` or ``("damaged", {})``."""
        link = self.link
        frame = self._framer.buildFrame(
            ReadDeviceInformationRequest(read_code=1, object_id=0, dev_id=unit)
        )
        master = self.master
        link.flush_input()
        link.sleep_ms(master.gap_ms)
        link.write(frame)
        t0 = master.clock()
        # room for a basic identification reply of up to 64 characters
        limit = master.timeout_ms + 64 * 11000 // self.baud
        buf = b""
        status = "silent"
        while True:
            left = limit - master.ticks_diff(master.clock(), t0)
            if left <= 0:
                break
            chunk = link.read(256, left)
            if not chunk:
                break
            buf += chunk
            try:
                _, pdu = self._framer.handleFrame(buf, unit, 0)
            except Exception:
                status = "damaged"
                break
            if pdu is None:
                continue
            if isinstance(pdu, ReadDeviceInformationResponse):
                objects = {
                    k: v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
                    for k, v in pdu.information.items()
                }
                status = "ok"
            elif isinstance(pdu, ExceptionResponse):
                status = "exception"
            else:
                status = "damaged"
            break
        if buf and status == "silent":
            status = "damaged"
        # what is still arriving belongs to nobody
        link.sleep_ms(master.gap_ms)
        link.flush_input()
        return status, objects if status == "ok" else {}

    def probe_unit(self, unit: int) -> Found | None:
        """Presence, then every candidate; None when the unit is silent."""
        mei_status, mei = self.device_identification(unit)
        present = mei_status in ("ok", "exception")
        damage = "frame" if mei_status == "damaged" else ""
        if not present:
            for fc, addr, count in self._presence:
                st, _ = self.transfer(unit, fc, addr, count)
                if st in (modbus_bus.OK, modbus_bus.EXCEPTION):
                    present = True
                    break
                if st == modbus_bus.CRC:
                    damage = "CRC"
                elif st == modbus_bus.FRAME:
                    damage = "frame: " + self.master.last_frame_error
        if not present:
            if damage:
                return Found(
                    unit,
                    self.baud,
                    DAMAGED,
                    note="replies are damaged (%s): check the line" % damage,
                )
            return None
        answer = mei if mei_status == "ok" else None
        candidates = [self.candidate(unit, p, answer) for p in self.table.values()]
        candidates.sort(key=lambda c: (-c.score, c.model))
        said, why = verdict(candidates)
        return Found(unit, self.baud, said, candidates, note=why)

    # -- evidence ---------------------------------------------------------------

    def candidate(
        self, unit: int, profile: dict[str, Any], mei: dict[int, str] | None
    ) -> Candidate:
        """Everything ``profile`` predicts about ``unit``, compared with what it answers."""
        c = Candidate(profile["model"], profile["label"], profile["status"] or "site")
        if profile["mei"] and mei is not None:
            product = profile["mei"]["product"]
            if mei.get(1) == product:
                c.evidence.append(Evidence("FC 43 product code %r" % product, W_DEFINITIVE, True))
            else:
                c.evidence.append(
                    Evidence("FC 43 product code %r, not %r" % (mei.get(1), product), W_CONTRADICTS)
                )
        for ident in profile["ident"]:
            c.evidence.append(self.ident_evidence(unit, ident))
        c.reading, plausibility = self._points(unit, profile)
        c.evidence.extend(plausibility)
        return c

    def ident_evidence(
        self, unit: int, ident: dict[str, Any], reply: tuple[int, list[int]] | None = None
    ) -> Evidence:
        """What an identification register block says about ``unit`` (read now, or ``reply``)."""
        if reply is None:
            reply = self.transfer(unit, ident["fc"], ident["addr"], ident["count"])
        st, regs = reply
        where = "%s (FC %d @%d)" % (ident["name"], ident["fc"], ident["addr"])
        expect = ident.get("expect")
        if st != modbus_bus.OK:
            why = (
                "exception %d" % self.master.last_exception
                if st == modbus_bus.EXCEPTION
                else "no reply"
            )
            return Evidence("%s: %s" % (where, why), 0.0 if expect is None else W_UNANSWERED)
        value = ident_value(ident, regs)
        shown = format_number(value)
        if expect is None:
            return Evidence("%s %s" % (ident["name"], shown), 0.0)
        if expect == "unit":
            want: Any = unit
        elif expect == "baud":
            want = ident["codes"].get(self.baud)
            if want is None:
                return Evidence(
                    "%s: the map has no code for %d baud" % (where, self.baud), W_UNANSWERED
                )
        else:
            want = expect
        if ident["type"] == "text":
            ok = isinstance(value, str) and value.strip() == str(want).strip()
        else:
            ok = isinstance(value, int | float) and math.isclose(value, want, abs_tol=1e-6)
        if not ok:
            return Evidence("%s = %s, not %s" % (where, shown, format_number(want)), W_CONTRADICTS)
        if expect == "unit":
            return Evidence("%s = %s, the unit id" % (ident["name"], shown), W_SETTING)
        if expect == "baud":
            return Evidence(
                "%s = %s, the code of %d baud" % (ident["name"], shown, self.baud), W_SETTING
            )
        return Evidence("%s = %s" % (ident["name"], shown), W_DEFINITIVE, True)

    def _points(self, unit: int, profile: dict[str, Any]) -> tuple[list[str], list[Evidence]]:
        points = profile["points"]
        shown = [""] * len(points)
        evidence: list[Evidence] = []
        good = 0
        for fc, addr, count, items in profiles.plan_reads(profile):
            st, regs = self.transfer(unit, fc, addr, count)
            for item in items:
                point = points[item[0]]
                if st != modbus_bus.OK:
                    why = (
                        "exception %d" % self.master.last_exception
                        if st == modbus_bus.EXCEPTION
                        else "no reply"
                    )
                    shown[item[0]] = "%s=%s" % (point["name"], why)
                    evidence.append(Evidence("%s: %s" % (point["name"], why), W_FAILED))
                    continue
                raw = profiles.decode_point(item, regs)
                value = engineering(raw, point)
                shown[item[0]] = "%s=%s" % (point["name"], format_value(raw, point))
                rng = profilefile.plausible_range(point)
                if isinstance(value, float) and not math.isfinite(value):
                    evidence.append(Evidence("%s is %s" % (point["name"], value), W_IMPLAUSIBLE))
                elif rng is None:
                    good += 1
                    evidence.append(Evidence("", W_ANSWERED))
                elif rng[0] <= value <= rng[1]:
                    good += 1
                    evidence.append(Evidence("", W_PLAUSIBLE))
                else:
                    evidence.append(
                        Evidence(
                            "%s=%s outside %s..%s"
                            % (
                                point["name"],
                                format_value(raw, point),
                                format_number(rng[0]),
                                format_number(rng[1]),
                            ),
                            W_IMPLAUSIBLE,
                        )
                    )
        evidence.append(Evidence("%d of %d points plausible" % (good, len(points)), 0.0))
        return shown, evidence


def verdict(candidates: list[Candidate]) -> tuple[str, str]:
    """``(verdict, why)`` on a unit from its ranked candidates (see the module docstring).

    Identification registers that match make an identification only when
    the readings fit too: a device that says it is the model but reads
    implausible values (a variant with another scale, unwired phases) is a
    guess the installer must confirm.
    """
    if not candidates:
        return UNKNOWN, "no profile to compare with"
    best = candidates[0]
    runner = candidates[1] if len(candidates) > 1 else None
    margin = best.score - runner.score if runner is not None else math.inf
    if best.score <= 0 or best.contradicted:
        return UNKNOWN, "no profile fits"
    settings = [e for e in best.evidence if e.weight == W_SETTING]
    registers = best.definitive or (len(settings) >= 2 and margin >= CLOSE)
    misfits = [e for e in best.evidence if e.weight in (W_IMPLAUSIBLE, W_FAILED)]
    if registers and not misfits:
        return IDENTIFIED, "by its identification registers"
    if registers:
        return GUESS, "its registers say %s, but %d readings do not fit" % (
            best.model,
            len(misfits),
        )
    if margin < CLOSE:
        return AMBIGUOUS, "%s and %s fit about equally" % (
            best.model,
            runner.model if runner else "",
        )
    return GUESS, "from readings only"


def ident_value(ident: dict[str, Any], regs: list[int]) -> Any:
    """The value of an identification register block: text, int or float."""
    if ident["type"] == "text":
        data = b"".join(bytes((w >> 8, w & 0xFF)) for w in regs[: ident["count"]])
        return data.rstrip(b"\x00 ").decode("ascii", "replace")
    item = (
        0,
        profiles.TYPES.index(ident["type"]),
        0,
        profiles.ORDERS.index(ident["order"]),
        None,
        0,
    )
    return profiles.decode_point(item, regs)


def engineering(raw: Any, point: dict[str, Any]) -> float:
    """The engineering value of a decoded raw reading."""
    if isinstance(raw, float):
        return raw
    return raw * 10.0 ** point.get("exp", 0)


def format_number(value: Any) -> str:
    if isinstance(value, float):
        return "%g" % value
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_value(raw: object, point: dict[str, Any]) -> str:
    """Engineering value of a raw reading: ``raw * 10**exp`` with its unit."""
    exp = point.get("exp", 0)
    if isinstance(raw, float):
        text = "%g" % raw
    elif exp < 0:
        text = "%.*f" % (-exp, int(raw) / 10**-exp)  # type: ignore[call-overload]
    else:
        text = str(int(raw) * 10**exp)  # type: ignore[call-overload]
    return text + (" " + point["unit"] if point.get("unit") else "")


def default_bauds(table: dict[str, dict[str, Any]]) -> list[int]:
    """9600, then the factory rates of the candidate profiles (fastest scan first)."""
    rates = [9600]
    for profile in table.values():
        if profile["baud"] and profile["baud"] not in rates:
            rates.append(profile["baud"])
    return rates


def open_bus(
    port: str, baud: int, parity: str, timeout_ms: int, retries: int
) -> tuple[Any, modbus_bus.Bus]:
    """The serial link on ``port`` and the terminal's Modbus master over it.

    Raises PortError (no such port, cannot open it) and UsageError (a baud
    rate or timeout the master refuses; the link is closed again).
    """
    from edge.host.serial_link import SerialLink

    if not os.path.exists(port):
        raise PortError("no such port %s" % port)
    try:
        link = SerialLink(port, baud=baud, parity=parity)
    except (OSError, ValueError) as err:
        raise PortError("cannot open %s: %s" % (port, why_unopenable(port))) from err
    try:
        master = modbus_bus.Bus(
            link, link.ticks_ms, sleep_ms=link.sleep_ms, baud=baud, timeout_ms=timeout_ms,
            retries=retries,
        )  # fmt: skip
    except ConfigError as err:
        link.close()
        raise UsageError(str(err)) from err
    return link, master


def probe(
    port: str,
    *,
    bauds: Iterable[int] | None = None,
    units: Iterable[int] = range(1, 248),
    timeout_ms: int = 100,
    parity: str = "N",
    extra: list[dict[str, Any]] | None = None,
    progress: Progress = lambda line: None,
) -> list[Found]:
    """Scan ``units`` at each of ``bauds`` on ``port``; return the units that answered.

    A unit found at one rate is not asked again at the next. ``extra`` are
    the site's profiles (full, checked). Raises PortError (no such port,
    cannot open it, it failed), UsageError (a baud rate or timeout the master
    refuses), ProbeError (nobody answered at any rate).
    """
    units = list(units)
    table = profilefile.catalogue(extra)
    rates = list(bauds) if bauds else default_bauds(table)
    if not os.path.exists(port):
        raise PortError("no such port %s" % port)
    started = time.monotonic()
    found: list[Found] = []
    for baud in rates:
        todo = [u for u in units if all(f.unit != u for f in found)]
        if not todo:
            break
        progress("%d baud, %s parity: %d ids" % (baud, parity, len(todo)))
        link, master = open_bus(port, baud, parity, timeout_ms, retries=0)
        with link:
            prober = Prober(master, link, table, baud)
            for i, unit in enumerate(todo, 1):
                hit = prober.probe_unit(unit)
                if hit is not None:
                    found.append(hit)
                    progress("unit %d: %s" % (unit, describe(hit)))
                if i % 50 == 0 and i < len(todo):
                    progress("%d of %d ids tried" % (i, len(todo)))
    seconds = time.monotonic() - started
    tried = ", ".join(str(b) for b in rates)
    if not found:
        raise ProbeError(
            "no unit answered on %s at %s baud, %s parity (%d ids tried in %.1f s): check the "
            "A/B wiring, termination, baud rate and parity"
            % (port, tried, parity, len(units), seconds)
        )
    progress("%d ids tried at %s baud in %.1f s" % (len(units), tried, seconds))
    found.sort(key=lambda f: f.unit)
    return found


def describe(hit: Found) -> str:
    """One line: the verdict and the best candidate."""
    best = hit.best
    if hit.verdict == DAMAGED:
        return hit.note
    if hit.verdict == UNKNOWN or best is None:
        return "answers, but no profile fits (unknown device)"
    # the short form of profilefile.status_note: a wrong map must not pass for a real one
    tag = {"documented": "", "test": " [test device]"}.get(
        best.status, " [%s profile]" % best.status
    )
    if hit.verdict == IDENTIFIED:
        return "%s%s, identified %s" % (best.model, tag, hit.note)
    if hit.verdict == AMBIGUOUS:
        return "%s or %s? ambiguous (%s), confirm by hand" % (
            best.model,
            hit.candidates[1].model,
            hit.note,
        )
    return "%s%s? a guess (%s), confirm by hand" % (best.model, tag, hit.note)


def report(found: list[Found], shown: int = 3) -> list[str]:
    """The result as text: per unit the verdict, then the best candidates with evidence."""
    lines = []
    for hit in found:
        lines.append("unit %d at %d baud: %s" % (hit.unit, hit.baud, describe(hit)))
        if hit.verdict == DAMAGED:
            continue
        for c in hit.candidates[:shown]:
            notes = [e.text for e in c.evidence if e.text]
            lines.append("  %-10s score %5.1f  %s" % (c.model, c.score, "; ".join(notes)))
            if c is hit.best and hit.verdict != UNKNOWN:
                lines.append("  %-10s %s" % ("", "  ".join(c.reading)))
    return lines


def check_profile(
    port: str,
    profile: dict[str, Any],
    unit: int,
    *,
    baud: int = 9600,
    parity: str = "N",
    timeout_ms: int = 300,
) -> tuple[bool, list[str]]:
    """Read every identification register and point of ``profile`` once from ``unit``.

    Returns ``(all good, lines)``: per register block the raw words and the
    value, per point its raw words, engineering value and plausibility. All
    good means every point answered with a plausible value and no
    identification register contradicts the profile. Raises PortError, UsageError as :func:`probe`.
    """
    link, master = open_bus(port, baud, parity, timeout_ms, retries=1)
    lines = [
        "%s at unit %d, %d baud, %s parity%s"
        % (
            profile["model"],
            unit,
            baud,
            parity,
            " (%s)" % profile["label"] if profile["label"] else "",
        )
    ]
    ok = True
    with link:
        prober = Prober(master, link, {profile["model"]: profile}, baud)
        if profile["ident"]:
            lines.append("identification")
        for ident in profile["ident"]:
            st, regs = prober.transfer(unit, ident["fc"], ident["addr"], ident["count"])
            head = "  %-10s FC%d @%-5d" % (ident["name"], ident["fc"], ident["addr"])
            if st != modbus_bus.OK:
                lines.append("%s %s" % (head, _failure(master, st)))
                ok = ok and "expect" not in ident
                continue
            evidence = prober.ident_evidence(unit, ident, (st, regs))
            ok = ok and evidence.weight > W_CONTRADICTS
            lines.append("%s words %-20s %s" % (head, _hex(regs), evidence.text))
        lines.append("points")
        answered = plausible = 0
        points = profile["points"]
        for fc, addr, count, items in profiles.plan_reads(profile):
            st, regs = prober.transfer(unit, fc, addr, count)
            for item in items:
                point = points[item[0]]
                order = " " + point["order"] if "order" in point else ""
                head = "  %-6s FC%d @%-5d %s%s" % (
                    point["name"],
                    fc,
                    point["addr"],
                    point["type"],
                    order,
                )
                if st != modbus_bus.OK:
                    lines.append("%s  %s" % (head, _failure(master, st)))
                    ok = False
                    continue
                answered += 1
                width = profiles.WIDTHS[item[1]]
                raw = profiles.decode_point(item, regs)
                value = engineering(raw, point)
                rng = profilefile.plausible_range(point)
                if isinstance(value, float) and not math.isfinite(value):
                    judged = "IMPLAUSIBLE"
                    ok = False
                elif rng is None:
                    judged = "no range known"
                elif rng[0] <= value <= rng[1]:
                    judged = "plausible (%s..%s)" % (format_number(rng[0]), format_number(rng[1]))
                    plausible += 1
                else:
                    judged = "IMPLAUSIBLE (%s..%s)" % (format_number(rng[0]), format_number(rng[1]))
                    ok = False
                lines.append(
                    "%s  words %-10s -> %-16s %s"
                    % (
                        head,
                        _hex(regs[item[2] : item[2] + width]),
                        format_value(raw, point),
                        judged,
                    )
                )
        lines.append("%d of %d points answered, %d plausible" % (answered, len(points), plausible))
    return ok, lines


def _failure(master: modbus_bus.Bus, st: int) -> str:
    if st == modbus_bus.EXCEPTION:
        code = master.last_exception
        return "exception %d (%s)" % (code, EXCEPTION_NAMES.get(code, "?"))
    if st == modbus_bus.TIMEOUT:
        return "no reply"
    return "damaged reply"


def _hex(words: list[int]) -> str:
    return " ".join("%04x" % w for w in words)
