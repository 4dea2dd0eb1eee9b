"""Simulated time.

Every value the simulator reports is a pure function of *simulated* time, so
tests and scenarios can jump a week ahead instead of waiting for one. The clock
runs at a configurable multiple of real time (``speed``): 1 is real time, 60
turns a day into 24 minutes, 0 freezes it so only :meth:`SimClock.set` and
:meth:`SimClock.advance` move it.

Simulated time is Unix epoch seconds (UTC); the physics converts it to the
site's local time (JST by default) where daily cycles need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """A settable, optionally accelerated clock.

    ``wall`` is the monotonic reference (seconds) the clock advances against and
    ``origin`` supplies the default start (the real time now); both are
    injectable so unit tests drive the clock without sleeping.

    Raises ``ValueError`` for a negative speed.
    """

    def __init__(
        self,
        start: float | None = None,
        speed: float = 1.0,
        wall: Callable[[], float] = time.monotonic,
        origin: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall
        self._check_speed(speed)
        self._speed = float(speed)
        self._anchor_sim = float(origin() if start is None else start)
        self._anchor_wall = wall()

    @staticmethod
    def _check_speed(speed: float) -> None:
        if not speed >= 0:  # also rejects NaN
            raise ValueError(f"clock speed must be >= 0, got {speed!r}")

    @property
    def speed(self) -> float:
        """How many simulated seconds pass per real second (0 = frozen)."""
        return self._speed

    def now(self) -> float:
        """Current simulated time, epoch seconds."""
        return self._anchor_sim + (self._wall() - self._anchor_wall) * self._speed

    def set(self, t: float) -> None:
        """Jump to simulated time ``t`` (epoch seconds); the clock keeps running from there."""
        self._anchor_sim = float(t)
        self._anchor_wall = self._wall()

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` ahead (negative goes back)."""
        self.set(self.now() + seconds)

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on without a jump in simulated time."""
        self._check_speed(speed)
        self.set(self.now())
        self._speed = float(speed)
