"""Errors raised by the simulated sensors.

One module per layer: everything the simulator raises on purpose derives from
:class:`SimError`, so the CLI and the control channel can catch one type and
report it without hiding programming errors.
"""

from __future__ import annotations


class SimError(Exception):
    """Base class of every error the simulator raises on purpose."""


class ConfigError(SimError, ValueError):
    """A device, site or command-line setting is invalid (unknown kind, bad unit id...)."""


class FaultError(SimError, ValueError):
    """A fault or override request names an unknown fault, point or parameter."""


class ControlError(SimError):
    """A control-channel request is malformed (not JSON, no such command, bad field)."""


class ScenarioError(ConfigError):
    """A scenario file is unreadable or invalid; the message starts with the key path."""
