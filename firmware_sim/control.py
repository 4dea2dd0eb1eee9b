"""Line-based JSON control channel: inject faults and set values while serving.

Another process (a scenario runner, a test) connects over TCP and sends one
JSON object per line; each gets exactly one JSON object per line back, in
order. Every reply has ``"ok"``; failures carry ``"error"`` and change
nothing. The commands (fields in brackets are optional):

===========  ============================================  ===========================
``cmd``      fields                                        does
===========  ============================================  ===========================
ping                                                       ``{"ok": true}``
status                                                     clock and every device
read         unit                                          one device's status
inject       unit, fault, [fault parameters...]            switch a fault on
clear        unit, [fault]                                 switch one/all faults off
unplug       unit                                          device leaves the bus
plug         unit                                          device comes back
set          unit, point, value                            force an engineering value
unset        unit, [point]                                 drop one/all overrides
clock        [set], [advance], [speed]                     move or re-speed the clock
shutdown                                                   stop the server cleanly
===========  ============================================  ===========================

``set`` in ``clock`` takes epoch seconds or an ISO 8601 time (no offset means
the site's local time, JST). :func:`execute` is the whole protocol without
sockets; :class:`ControlServer` puts it on a socket. The channel has no
authentication: bind it to loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any

from .bus import Bus
from .errors import ControlError, SimError

log = logging.getLogger(__name__)

JST = dt.timezone(dt.timedelta(hours=9), "JST")
MAX_LINE = 64 * 1024


def parse_time(value: Any) -> float:
    """Epoch seconds from a number or an ISO 8601 string (naive = JST).

    Raises :class:`ControlError` for anything else.
    """
    if isinstance(value, bool):
        raise ControlError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError as err:
            raise ControlError(f"not an ISO 8601 time: {value!r}") from err
        if when.tzinfo is None:
            when = when.replace(tzinfo=JST)
        return when.timestamp()
    raise ControlError(f"not a time: {value!r}")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, JST).isoformat(timespec="milliseconds")


def _field(request: dict[str, Any], name: str) -> Any:
    if name not in request:
        raise ControlError(f"{request.get('cmd')!r} needs {name!r}")
    return request[name]


def _clock(bus: Bus, request: dict[str, Any]) -> dict[str, Any]:
    clock = bus.clock
    if "speed" in request:
        speed = request["speed"]
        if isinstance(speed, bool) or not isinstance(speed, int | float) or not speed >= 0:
            raise ControlError(f"speed must be a number >= 0, got {speed!r}")
    target = parse_time(request["set"]) if "set" in request else None
    advance = request.get("advance", 0)
    if isinstance(advance, bool) or not isinstance(advance, int | float):
        raise ControlError(f"advance must be seconds, got {advance!r}")
    # Speed first, so {"set": T, "speed": 0} freezes at exactly T.
    if "speed" in request:
        clock.set_speed(request["speed"])
    if target is not None:
        clock.set(target)
    if advance:
        clock.advance(advance)
    return {}


def execute(bus: Bus, request: Any, on_shutdown: Callable[[], None] | None = None) -> dict:
    """Carry out one control request; always returns the reply object, never raises SimError."""
    try:
        if not isinstance(request, dict):
            raise ControlError("a request is a JSON object")
        result = _dispatch(bus, request, on_shutdown)
    except SimError as err:
        return {"ok": False, "error": str(err)}
    return {"ok": True, **result}


_PLAIN = ("cmd", "unit", "fault")


def _dispatch(
    bus: Bus, request: dict[str, Any], on_shutdown: Callable[[], None] | None
) -> dict[str, Any]:
    cmd = request.get("cmd")
    if cmd == "ping":
        return {}
    if cmd == "status":
        now = bus.clock.now()
        return {
            "time": now,
            "iso": _iso(now),
            "speed": bus.clock.speed,
            "devices": bus.status(),
        }
    if cmd == "clock":
        _clock(bus, request)
        now = bus.clock.now()
        return {"time": now, "iso": _iso(now), "speed": bus.clock.speed}
    if cmd == "shutdown":
        if on_shutdown is not None:
            on_shutdown()
        return {}
    if cmd not in ("read", "inject", "clear", "unplug", "plug", "set", "unset"):
        raise ControlError(f"unknown command {cmd!r}")
    unit = _field(request, "unit")
    device = bus.device(unit)  # ConfigError if there is none
    if cmd == "inject":
        params = {k: v for k, v in request.items() if k not in _PLAIN}
        bus.inject(unit, _field(request, "fault"), **params)
    elif cmd == "clear":
        bus.clear(unit, request.get("fault"))
    elif cmd == "unplug":
        bus.unplug(unit)
    elif cmd == "plug":
        bus.plug(unit)
    elif cmd == "set":
        bus.set_value(unit, _field(request, "point"), _field(request, "value"))
    elif cmd == "unset":
        bus.clear_value(unit, request.get("point"))
    return {"device": device.status(bus.clock.now())}


class ControlServer:
    """The control channel on a socket; create with :meth:`open`, stop with :meth:`close`."""

    def __init__(self, bus: Bus, on_shutdown: Callable[[], None]) -> None:
        self.bus = bus
        self.on_shutdown = on_shutdown
        self.address: tuple[str, int] = ("", 0)
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @classmethod
    async def open(
        cls, bus: Bus, host: str, port: int, on_shutdown: Callable[[], None]
    ) -> ControlServer:
        """Listen on ``host:port`` (0 = free port); ``OSError`` if it cannot bind."""
        control = cls(bus, on_shutdown)
        control._server = await asyncio.start_server(control._client, host, port, limit=MAX_LINE)
        address = control._server.sockets[0].getsockname()
        control.address = (address[0], address[1])
        return control

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._serve_lines(reader, writer)
        except ConnectionError:
            pass
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve_lines(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(b'{"ok": false, "error": "line too long"}\n')
                return
            if not line:
                return
            if not line.strip():
                continue
            try:
                request = json.loads(line)
            except ValueError as err:
                reply: dict[str, Any] = {"ok": False, "error": f"not JSON: {err}"}
            else:
                reply = execute(self.bus, request, self.on_shutdown)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    async def close(self) -> None:
        """Stop listening, end every client connection and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        # Ending the connections lets each handler return by itself; cancelling
        # them at loop shutdown instead makes asyncio log a spurious traceback.
        for writer in list(self._clients.values()):
            writer.close()
        if self._clients:
            await asyncio.wait(list(self._clients), timeout=5)
