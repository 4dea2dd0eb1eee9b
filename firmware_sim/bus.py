"""One RS-485 bus of simulated devices and its request -> reply core.

:meth:`Bus.handle` is the whole slave side of Modbus RTU for every device on
the bus, as a pure byte-level function: a complete request ADU in, the reply
ADU (or silence) and how late it leaves out. The serial, pty and TCP links in
:mod:`firmware_sim.links` and the in-process :meth:`Bus.respond` all call it,
so every transport shows the same devices and the same faults.

Request ADU (RTU framing)::

    [unit][fc][data ...][crc lo][crc hi]     CRC-16/MODBUS over unit..data

Framing, request decoding and reply encoding are pymodbus's (``FramerRTU``,
``DecodePDU``, the response PDU classes); what a device answers is ours.

Silence (``Reply.frame is None``) is returned, as on a real bus, for: a frame
shorter than 4 bytes or with a bad CRC, a unit id no device has (including
broadcast 0, since every supported request is a read), a device that is
unplugged or has the ``no_reply`` fault, and a device listening at another
baud rate than the line's (a link that knows the rate says so; to such a
device the request is line noise).

Besides reads (FC 1-4) a device whose profile has ``mei`` answers Read
Device Identification (FC 43, MEI type 14) with its vendor, product code
and revision (basic objects 0-2), built with pymodbus's PDU classes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.mei_message import ReadDeviceInformationRequest, ReadDeviceInformationResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from .clock import SimClock
from .devices import Device, Site, make_device
from .errors import ConfigError

_READ_RESPONSES: dict[int, type[ModbusPDU]] = {
    1: ReadCoilsResponse,
    2: ReadDiscreteInputsResponse,
    3: ReadHoldingRegistersResponse,
    4: ReadInputRegistersResponse,
}


class Reply(NamedTuple):
    """What the bus does with one request: send ``frame`` after ``delay`` seconds.

    ``frame`` is None for silence. ``delay`` is real (wall-clock) time: a slow
    device is slow for the master, whatever the simulated clock's speed.
    """

    frame: bytes | None
    delay: float = 0.0


SILENCE = Reply(None, 0.0)
IDENTIFICATION = 0x2B  # FC 43, Encapsulated Interface Transport (MEI 14: device identification)


def _crc_ok(frame: bytes) -> bool:
    return FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))


class Bus:
    """Devices sharing one RS-485 line, each at its own unit id.

    ``clock`` supplies simulated time; ``sleep`` is what :meth:`respond` calls
    for a slow reply (inject a fake one to keep unit tests instant). The site
    (climate, supply, install time) is derived from ``seed`` and the clock's
    current time unless given.
    """

    def __init__(
        self,
        clock: SimClock,
        seed: int = 0,
        *,
        site: Site | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.site = site if site is not None else Site.create(seed, clock.now())
        self._sleep = sleep
        self._devices: dict[int, Device] = {}
        self._stats: dict[int, dict[str, int]] = {}
        self._decoder = DecodePDU(True)
        self._framer = FramerRTU(self._decoder)

    # -- devices -------------------------------------------------------------

    def add(self, kind: str, unit: int, **params: Any) -> Device:
        """Put a new device of ``kind`` (or model) at ``unit``; ``ConfigError`` if taken.

        ``params``: the kind's physics parameters, ``model`` and ``baud``
        (:func:`firmware_sim.devices.make_device`).
        """
        if unit in self._devices:
            raise ConfigError(f"unit id {unit} is already used on this bus")
        device = make_device(kind, unit, self.site, **params)
        self._devices[unit] = device
        self._stats[unit] = {"requests": 0, "replies": 0, "silent": 0, "wrong_baud": 0}
        return device

    def device(self, unit: int) -> Device:
        """The device at ``unit``; ``ConfigError`` if there is none."""
        try:
            return self._devices[unit]
        except (KeyError, TypeError):
            raise ConfigError(f"no device at unit id {unit!r}") from None

    def devices(self) -> list[Device]:
        """Every device, by unit id."""
        return [self._devices[u] for u in sorted(self._devices)]

    # -- the slave side ------------------------------------------------------

    def handle(self, request: bytes, baud: int | None = None) -> Reply:
        """Answer one complete request ADU; see the module docstring for silence.

        ``baud`` is the line's rate when the link knows it (a pty or serial
        port); None (TCP, in-process) reaches every device.
        """
        if len(request) < 4 or not _crc_ok(request):
            return SILENCE
        unit, fc = request[0], request[1]
        device = self._devices.get(unit)
        if device is None:
            return SILENCE
        stats = self._stats[unit]
        if baud is not None and baud != device.baud:
            stats["wrong_baud"] += 1
            return SILENCE
        stats["requests"] += 1
        faults = device.faults
        if faults.get("unplugged") is not None or faults.hits("no_reply") is not None:
            stats["silent"] += 1
            return SILENCE
        response = self._response(device, fc, request)
        frame = self._framer.buildFrame(response)
        wrong = faults.hits("wrong_unit")
        if wrong is not None:
            other = wrong.get("as_unit", unit % 247 + 1)
            frame = self._framer.encode(frame[1:-2], other, 0)
        if faults.hits("crc") is not None:
            # Flipping every CRC bit guarantees a mismatch, whatever the payload.
            frame = frame[:-2] + bytes(b ^ 0xFF for b in frame[-2:])
        slow = faults.get("slow")
        stats["replies"] += 1
        return Reply(frame, slow["delay_ms"] / 1000.0 if slow else 0.0)

    def _response(self, device: Device, fc: int, request: bytes) -> ModbusPDU:
        unit = device.unit
        failure = device.faults.hits("exception")
        if failure is not None:
            return ExceptionResponse(fc, failure["code"], device_id=unit)
        response_class = _READ_RESPONSES.get(fc)
        if fc == IDENTIFICATION and device.model.mei:
            response_class = ReadDeviceInformationResponse
        if response_class is None or fc not in device.model.function_codes:
            return ExceptionResponse(fc, ExcCodes.ILLEGAL_FUNCTION, device_id=unit)
        pdu = self._decoder.decode(request[1:-2])
        if pdu is None:  # e.g. a count of 0 or above the limit for the function
            return ExceptionResponse(fc, ExcCodes.ILLEGAL_VALUE, device_id=unit)
        if isinstance(pdu, ReadDeviceInformationRequest):
            return self._identification(device, pdu)
        values = device.read(fc, pdu.address, pdu.count, self.clock.now())
        if isinstance(values, ExcCodes):
            return ExceptionResponse(fc, values, device_id=unit)
        if fc in (1, 2):
            return response_class(dev_id=unit, bits=[bool(v) for v in values])
        return response_class(dev_id=unit, registers=values)

    @staticmethod
    def _identification(device: Device, pdu: ReadDeviceInformationRequest) -> ModbusPDU:
        """The basic device identification objects (0 vendor, 1 product code, 2 revision)."""
        mei = device.model.mei or {}
        objects = {0: mei.get("vendor", ""), 1: mei["product"], 2: mei.get("revision", "")}
        information = {k: v.encode("ascii") for k, v in objects.items() if v}
        return ReadDeviceInformationResponse(
            read_code=pdu.read_code, information=information, dev_id=device.unit
        )

    def respond(self, request: bytes) -> bytes | None:
        """In-process exchange for fake links: the reply bytes or None for silence.

        A slow reply calls the ``sleep`` given to the constructor first; a fake
        link with its own timeout can call :meth:`handle` instead and compare
        ``Reply.delay`` with it.
        """
        reply = self.handle(request)
        if reply.frame is not None and reply.delay > 0:
            self._sleep(reply.delay)
        return reply.frame

    # -- run-time control (tests, scenarios, control channel) ----------------

    def inject(self, unit: int, fault: str, /, **params: Any) -> None:
        """Switch ``fault`` on at ``unit`` (see :mod:`firmware_sim.faults`)."""
        self.device(unit).inject(fault, self.clock.now(), **params)

    def clear(self, unit: int, fault: str | None = None) -> None:
        """Switch ``fault`` (every fault when None) off at ``unit``."""
        self.device(unit).clear(fault)

    def unplug(self, unit: int) -> None:
        """Take the device at ``unit`` off the bus (it keeps its state)."""
        self.inject(unit, "unplugged")

    def plug(self, unit: int) -> None:
        """Put an unplugged device back."""
        self.clear(unit, "unplugged")

    def set_value(self, unit: int, point: str, value: float) -> None:
        """Force ``point`` of ``unit`` to the engineering ``value`` (e.g. ior = 35.0 mA)."""
        self.device(unit).set_value(point, value, self.clock.now())

    def clear_value(self, unit: int, point: str | None = None) -> None:
        """Drop the override of ``point`` (every override of ``unit`` when None)."""
        self.device(unit).clear_value(point, self.clock.now())

    def status(self) -> list[dict[str, Any]]:
        """Every device's state, values, faults and request counters."""
        t = self.clock.now()
        return [
            {**device.status(t), "stats": dict(self._stats[device.unit])}
            for device in self.devices()
        ]
