"""Serve a :class:`~firmware_sim.bus.Bus` over real links: pty pairs, serial ports, TCP.

Every link cuts its byte stream into request frames the way an RTU slave does
(:class:`RtuSplitter`), hands each frame to :meth:`Bus.handle` and writes the
reply after the reply's delay. So all links show the same devices and faults.

- :class:`PtyLink` creates a pseudo-terminal pair, serves on the master side
  and publishes the slave side's name (``/dev/pts/N``): the terminal opens that
  path with pyserial as if it were a USB RS-485 adapter. The baud rate the
  terminal sets on the pty reaches the bus, so a device listening at another
  rate stays silent as on a real line (parity cannot be seen: Linux ptys
  drop it).
- :class:`SerialLink` serves an existing serial port (an RS-485 adapter for
  hardware-in-the-loop runs, or one end of a pty pair made by someone else).
- :func:`open_tcp` listens on TCP and speaks Modbus *RTU framing* over each
  connection (not Modbus/TCP's MBAP header), because virtual terminals speak
  RTU whatever carries it.

Everything runs on one asyncio loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import termios
import tty
from collections.abc import Callable

import serial
from pymodbus.exceptions import NotImplementedException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from .bus import Bus

log = logging.getLogger(__name__)

# termios speed constants -> baud rates
_SPEEDS = {
    getattr(termios, "B%d" % rate): rate
    for rate in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
}

#: Line silence that ends a frame the splitter could not size (RTU's t3.5 is
#: 4 ms at 9600 baud; ptys and sockets deliver in bursts, so allow more).
DEFAULT_GAP = 0.02


class RtuSplitter:
    """Cut a byte stream into RTU request frames.

    :meth:`feed` returns frames as soon as the known length of a request
    (from its function code, via pymodbus's PDU classes) has arrived with a
    good CRC. Anything it cannot size or whose CRC fails stays buffered until
    the caller reports line silence with :meth:`flush`, which returns the
    buffered bytes as one frame: exactly RTU's rule that a frame ends at a
    3.5-character gap. The bus ignores it if its CRC is bad and answers
    ILLEGAL_FUNCTION if it is a well-formed request for an unknown function.
    """

    MAX_BUFFER = 512  # an RTU frame is at most 256 bytes

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._decoder = DecodePDU(True)

    @property
    def pending(self) -> bool:
        """True if bytes wait for more data or for silence."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete frames they finish."""
        self._buffer += data
        if len(self._buffer) > self.MAX_BUFFER:  # noise with no gap: keep the tail
            del self._buffer[: -self.MAX_BUFFER]
        frames = []
        while self._buffer:
            size = self._size(bytes(self._buffer[:8]))
            if size is None or len(self._buffer) < size:
                break
            frame = bytes(self._buffer[:size])
            if not FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big")):
                break
            del self._buffer[:size]
            frames.append(frame)
        return frames

    def flush(self) -> bytes | None:
        """The line went silent: return what is buffered as one frame (None if empty)."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer)
        self._buffer.clear()
        return frame

    def _size(self, head: bytes) -> int | None:
        if len(head) < 2:
            return None
        pdu_class = self._decoder.lookupPduClass(head)
        if pdu_class is None:
            return None
        try:
            return pdu_class.calculateRtuFrameSize(head) or None
        except NotImplementedException:
            return None


class RtuSession:
    """One byte stream (a serial line or a TCP connection) served from ``bus``.

    ``send`` writes bytes to the stream. Replies with a delay are scheduled on
    the loop, so a slow device never blocks the others.
    """

    def __init__(
        self,
        bus: Bus,
        send: Callable[[bytes], None],
        gap: float = DEFAULT_GAP,
        baud: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._bus = bus
        self._send = send
        self._baud = baud
        self._gap = gap
        self._loop = asyncio.get_running_loop()
        self._splitter = RtuSplitter()
        self._silence: asyncio.TimerHandle | None = None
        self._later: dict[int, asyncio.TimerHandle] = {}
        self._ids = itertools.count()
        self.closed = False

    def data_received(self, data: bytes) -> None:
        """Bytes arrived from the master."""
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        for frame in self._splitter.feed(data):
            self._dispatch(frame)
        if self._splitter.pending:
            self._silence = self._loop.call_later(self._gap, self._line_silent)

    def _line_silent(self) -> None:
        self._silence = None
        frame = self._splitter.flush()
        if frame is not None:
            self._dispatch(frame)

    def _dispatch(self, frame: bytes) -> None:
        try:
            reply = self._bus.handle(frame, self._baud())
        except Exception:  # a simulator bug must look like a silent device, not kill the link
            log.exception("bus failed on request %s", frame.hex())
            return
        if reply.frame is None:
            return
        if reply.delay <= 0:
            self._write(reply.frame)
            return
        key = next(self._ids)
        self._later[key] = self._loop.call_later(reply.delay, self._late, key, reply.frame)

    def _late(self, key: int, frame: bytes) -> None:
        self._later.pop(key, None)
        self._write(frame)

    def _write(self, frame: bytes) -> None:
        if self.closed:
            return
        try:
            self._send(frame)
        except OSError as err:  # nobody listening on the line: the reply is lost, as on RS-485
            log.warning("reply lost: %s", err)

    def close(self) -> None:
        """Stop: pending delayed replies are dropped."""
        self.closed = True
        if self._silence is not None:
            self._silence.cancel()
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()


class _FdLink:
    """Serve an already-open, readable and writable file descriptor."""

    def __init__(self, bus: Bus, fd: int, gap: float) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._session = RtuSession(bus, self._send, gap, self.line_baud)
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as err:
            log.error("link failed, no longer served: %s", err)
            self._stop_reading()
            return
        if data:
            self._session.data_received(data)
        else:  # end of file: the device went away
            log.error("link closed by the other side, no longer served")
            self._stop_reading()

    def _send(self, frame: bytes) -> None:
        view = memoryview(frame)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                raise OSError("output buffer full") from None
            view = view[written:]

    def line_baud(self) -> int | None:
        """The line's baud rate as the bus should see it (None: every device hears)."""
        return None

    def _stop_reading(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)

    def close(self) -> None:
        """Stop serving; the subclass closes its descriptors."""
        self._session.close()
        self._stop_reading()


class PtyLink(_FdLink):
    """A new pty pair: the bus on the master side, the terminal opens :attr:`name`."""

    def __init__(self, bus: Bus, gap: float = DEFAULT_GAP) -> None:
        self._master, self._slave = os.openpty()
        # Raw mode: no echo, no line editing, no CR/LF rewriting. Keeping our
        # own slave descriptor open means the master never reads EIO while no
        # terminal has the port open, and the terminal may close and reopen it.
        tty.setraw(self._slave)
        # 9600 baud until the terminal sets its own rate (Linux starts ptys at 38400)
        attrs = termios.tcgetattr(self._slave)
        attrs[4] = attrs[5] = termios.B9600
        termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
        self.name = os.ttyname(self._slave)
        super().__init__(bus, self._master, gap)

    def line_baud(self) -> int | None:
        """The rate the terminal set on its end of the pty (ptys share it)."""
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except termios.error:
            return None
        return _SPEEDS.get(speed)

    def close(self) -> None:
        super().close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class SerialLink(_FdLink):
    """An existing serial port (``/dev/ttyUSB0``, ``/dev/pts/N``), 8N1 at ``baudrate``.

    Raises ``serial.SerialException`` (an ``OSError``) if the port cannot be opened.
    """

    def __init__(self, bus: Bus, port: str, baudrate: int = 9600, gap: float = DEFAULT_GAP) -> None:
        self._serial = serial.Serial(port=port, baudrate=baudrate, timeout=0, exclusive=True)
        self.name = port
        self.baudrate = baudrate
        super().__init__(bus, self._serial.fileno(), gap)

    def line_baud(self) -> int | None:
        """The port runs at the rate it was opened with."""
        return self.baudrate

    def close(self) -> None:
        super().close()
        self._serial.close()


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, link: TcpLink) -> None:
        self._link = link
        self._session: RtuSession | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._session = RtuSession(self._link.bus, transport.write, self._link.gap)
        self._link.connections.add(transport)

    def data_received(self, data: bytes) -> None:
        if self._session is not None:
            self._session.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._session is not None:
            self._session.close()
        if self._transport is not None:
            self._link.connections.discard(self._transport)


class TcpLink:
    """RTU-framed Modbus over TCP: each connection is its own line to the same bus.

    Create with :meth:`open`; ``address`` is where it listens (port 0 picks a
    free one).
    """

    def __init__(self, bus: Bus, gap: float) -> None:
        self.bus = bus
        self.gap = gap
        self.connections: set[asyncio.Transport] = set()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    @classmethod
    async def open(cls, bus: Bus, host: str, port: int, gap: float = DEFAULT_GAP) -> TcpLink:
        """Listen on ``host:port``; ``OSError`` if the address cannot be bound."""
        link = cls(bus, gap)
        loop = asyncio.get_running_loop()
        link.server = await loop.create_server(lambda: _TcpProtocol(link), host, port)
        address = link.server.sockets[0].getsockname()
        link.address = (address[0], address[1])
        return link

    async def close(self) -> None:
        """Stop listening, drop every connection and wait until the socket is closed."""
        if self.server is not None:
            self.server.close()
        for transport in list(self.connections):
            transport.close()
        if self.server is not None:
            await self.server.wait_closed()
