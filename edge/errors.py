"""Errors of the terminal (edge) layer.

One errors module for the device side: core code raises these, the agent
catches them at its boundaries. ``ConfigError`` (an invalid profile, device
list or setting) is the protocol's (:mod:`protocol.config` validates the
cloud's part of the configuration for both sides) and is re-exported here. It
is not also a ``ValueError``: MicroPython cannot derive a class from two
built-in exception types ("multiple bases have instance lay-out conflict"),
and the device must behave as the host does, so catch ``ConfigError``.
"""

from protocol.errors import ConfigError

__all__ = [
    "ConfigError",
    "EdgeError",
    "ModbusCRCError",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusFrameError",
    "ModbusTimeout",
]


class EdgeError(Exception):
    """Base of the errors raised by terminal code (other than ConfigError)."""


class ModbusError(EdgeError):
    """A Modbus exchange failed; the bus is usable again afterwards."""


class ModbusTimeout(ModbusError):
    """No complete reply arrived before the deadline."""


class ModbusCRCError(ModbusError):
    """The reply's CRC-16 did not match its contents."""


class ModbusExceptionResponse(ModbusError):
    """The slave answered with an exception PDU (function code | 0x80).

    ``code`` is the Modbus exception code (1 illegal function, 2 illegal
    data address, 3 illegal data value, 4 slave device failure, ...).
    """

    def __init__(self, code):
        super().__init__("modbus exception code %d" % code)
        self.code = code


class ModbusFrameError(ModbusError):
    """The reply is malformed: wrong unit id, function code or byte count.

    ``reason`` is a short machine-friendly word, e.g. ``"unit"``, ``"fc"``,
    ``"count"``, ``"short"``.
    """

    def __init__(self, reason):
        super().__init__("modbus frame error: %s" % reason)
        self.reason = reason
