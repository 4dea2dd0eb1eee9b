"""The sensors wired to a terminal, as its birth frame names them.

A terminal whose firmware sends the birth's ``devices`` (protocol/README.md,
section 5) says for each wired device the sensor profile it polls with and
that profile's *status*: ``documented`` (the register map is the
manufacturer's published one), ``reference`` (a stand-in map for a class of
device: no published map behind it), ``test`` (an invented device of the
test suite and demo) or ``site`` (a profile the site added;
docs/sensors.md). The cloud takes the terminal's word rather than a table
of its own: the status belongs to the map the terminal actually runs,
which depends on its firmware, and a site profile is known only there.

Pure: takes the terminal row and plain values, no Flask.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloud.models import Terminal

DOCUMENTED = "documented"
# The statuses the site explains; any other (a later firmware's) is shown
# as it is and, like these, as not documented.
KNOWN = ("documented", "reference", "test", "site")


@dataclass(frozen=True)
class Sensor:
    name: str  # the device's name in the wiring, the prefix of its channels
    model: str  # the profile's model, e.g. "SDM120", "IM-100"
    status: str  # as the terminal said (see the module doc)
    channels: tuple[str, ...]  # its channels' names, in the order given

    @property
    def documented(self) -> bool:
        """True only for a manufacturer's published map; everything else is marked."""
        return self.status == DOCUMENTED


def of_terminal(terminal: Terminal, channel_names: Iterable[str] = ()) -> list[Sensor] | None:
    """The terminal's sensors as its newest birth named them, in wiring order.

    None when the terminal has not said (no birth yet, or firmware older
    than the birth's ``devices``); an empty list when it has no wiring.
    ``channel_names`` (the current channels) are shared out by their
    ``<device>.`` prefix; a malformed stored entry is skipped, never raised.
    """
    raw = terminal.devices
    if raw is None:
        return None
    names = list(channel_names)
    out = []
    for d in raw:
        if not isinstance(d, dict):
            continue
        name, model, status = d.get("name"), d.get("model"), d.get("status")
        if not (isinstance(name, str) and isinstance(model, str) and isinstance(status, str)):
            continue
        mine = tuple(n for n in names if n.startswith(name + "."))
        out.append(Sensor(name, model, status, mine))
    return out


def marked_statuses(sensors: Iterable[Sensor]) -> list[str]:
    """The statuses other than documented among ``sensors``, each once, in order met."""
    seen: list[str] = []
    for s in sensors:
        if not s.documented and s.status not in seen:
            seen.append(s.status)
    return seen
