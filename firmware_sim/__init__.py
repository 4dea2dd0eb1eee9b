"""Simulated Modbus RTU sensors for mimamori: physics, faults, links.

In-process use (what a terminal's fake link or a scenario runner needs)::

    from firmware_sim import Bus, SimClock

    clock = SimClock(start=1_780_000_000, speed=0)   # frozen; tests move it
    bus = Bus(clock, seed=7)
    bus.add("insulation", 1)
    bus.add("meter", 2, peak_kw=150)
    reply = bus.respond(request_adu)                  # bytes, or None for silence
    bus.set_value(1, "ior", 35.0)                     # force Ior = 35.0 mA
    bus.inject(2, "crc")                              # corrupt the meter's replies
    clock.advance(7 * 86400)                          # a week later

Serving over a pty, a serial port or TCP: ``python -m firmware_sim serve --help``
and ``firmware_sim/README.md``. Nothing happens at import time.
"""

from .bus import Bus, Reply
from .clock import SimClock
from .devices import KINDS, Device, Site, make_device
from .errors import ConfigError, ControlError, FaultError, SimError
from .faults import FAULTS
from .registers import models

__all__ = [
    "FAULTS",
    "KINDS",
    "Bus",
    "ConfigError",
    "ControlError",
    "Device",
    "FaultError",
    "Reply",
    "SimClock",
    "SimError",
    "Site",
    "make_device",
    "models",
]
