"""Injectable faults of one simulated device.

A fault is a name plus a few parameters, switched on and off at run time by
tests, scenarios or the control channel:

==============  ==============================================  ==================================
name            effect                                          parameters (default)
==============  ==============================================  ==================================
``no_reply``    the device hears the request and stays silent   ``rate`` (1.0)
``unplugged``   the device is gone from the bus: silent         none
``slow``        the reply leaves ``delay_ms`` late              ``delay_ms`` (required)
``crc``         the reply's CRC is wrong                        ``rate`` (1.0)
``wrong_unit``  the reply carries another unit id (valid CRC)   ``as_unit`` (own id + 1), ``rate``
``exception``   the device answers with an exception code       ``code`` (4), ``rate``
``stuck``       points freeze at the raw value they had         ``points`` (all)
``spikes``      readings jump to ``factor`` times their value   ``rate`` (0.2), ``factor`` (10.0),
                (bits flip)                                     ``points`` (all analogue points)
==============  ==============================================  ==================================

``rate`` is the probability that the fault hits a given request; draws come
from a generator seeded per device, so a run is repeatable for the same
sequence of requests. This module only validates and stores faults; the bus
and the device apply them.
"""

from __future__ import annotations

import random
from typing import Any

from .errors import FaultError

FAULTS = ("no_reply", "unplugged", "slow", "crc", "wrong_unit", "exception", "stuck", "spikes")

_ALLOWED = {
    "no_reply": {"rate"},
    "unplugged": set(),
    "slow": {"delay_ms"},
    "crc": {"rate"},
    "wrong_unit": {"as_unit", "rate"},
    "exception": {"code", "rate"},
    "stuck": {"points"},
    "spikes": {"rate", "factor", "points"},
}


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise FaultError(f"{name} must be within {low}..{high}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise FaultError(f"{name} must be within {low}..{high}, got {value!r}")
    return value


def check_name(name: str) -> None:
    """Raise :class:`FaultError` unless ``name`` is a known fault."""
    if name not in _ALLOWED:
        raise FaultError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


def normalise(name: str, params: dict[str, Any], point_names: tuple[str, ...]) -> dict[str, Any]:
    """Validate a fault request and fill in defaults.

    Raises :class:`FaultError` for an unknown fault, an unknown parameter, a
    value out of range or a point the device does not have.
    """
    check_name(name)
    unknown = set(params) - _ALLOWED[name]
    if unknown:
        raise FaultError(f"fault {name!r} takes no parameter {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if "rate" in _ALLOWED[name]:
        out["rate"] = _number("rate", params.get("rate", 0.2 if name == "spikes" else 1.0), 0, 1)
    if name == "slow":
        if "delay_ms" not in params:
            raise FaultError("fault 'slow' needs delay_ms")
        out["delay_ms"] = _integer("delay_ms", params["delay_ms"], 1, 600_000)
    if name == "wrong_unit" and params.get("as_unit") is not None:
        out["as_unit"] = _integer("as_unit", params["as_unit"], 0, 255)
    if name == "exception":
        out["code"] = _integer("code", params.get("code", 4), 1, 255)
    if name == "spikes":
        out["factor"] = _number("factor", params.get("factor", 10.0), -1e6, 1e6)
    if "points" in _ALLOWED[name]:
        points = params.get("points")
        if points is None:
            out["points"] = None
        else:
            if isinstance(points, str):
                points = [points]
            if not isinstance(points, list | tuple) or not points:
                raise FaultError("points must be a point name or a non-empty list of them")
            missing = [p for p in points if p not in point_names]
            if missing:
                raise FaultError(f"no point {', '.join(map(str, missing))}; have {point_names}")
            out["points"] = list(points)
    return out


class Faults:
    """The faults currently active on one device, and the dice that decide rates."""

    def __init__(self, seed: int) -> None:
        self._active: dict[str, dict[str, Any]] = {}
        self._rng = random.Random(seed)

    def set(self, name: str, params: dict[str, Any]) -> None:
        """Activate ``name`` with already normalised ``params`` (replaces an active one)."""
        self._active[name] = params

    def clear(self, name: str | None = None) -> None:
        """Deactivate ``name``, or every fault when ``name`` is None. Unknown names are a no-op."""
        if name is None:
            self._active.clear()
        else:
            self._active.pop(name, None)

    def get(self, name: str) -> dict[str, Any] | None:
        """Parameters of the active fault ``name``, or None."""
        return self._active.get(name)

    def hits(self, name: str) -> dict[str, Any] | None:
        """Parameters of ``name`` if it is active *and* strikes this request, else None."""
        params = self._active.get(name)
        if params is None:
            return None
        rate = params.get("rate", 1.0)
        if rate >= 1.0 or self._rng.random() < rate:
            return params
        return None

    def active(self) -> dict[str, dict[str, Any]]:
        """A copy of every active fault and its parameters."""
        return {name: dict(params) for name, params in self._active.items()}
