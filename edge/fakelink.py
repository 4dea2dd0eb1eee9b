"""An in-process RS-485 line and Modbus slaves, for tests and simulations.

:class:`FakeLink` plays the line inside the test process: the slaves are
callbacks, bytes arrive at the times a real line would deliver them, a fault
hook can split, corrupt, delay or drop replies (the way pymodbus' NullModem
``set_manipulator`` does), and time is virtual, so a test of a 300 ms timeout
takes no real time at all. :class:`FakeSlave` answers read requests from
register tables. Runs on CPython and MicroPython; a terminal never imports it.
"""

from edge import modbus
from edge.errors import ModbusError
from edge.link import Link, silence_us


class FakeLink(Link):
    """An RS-485 line with slaves on it, on a virtual microsecond clock.

    ``slaves`` are callables ``f(request_bytes) -> reply bytes or None``;
    every one sees every request and the first reply wins (like a bus where
    only the addressed device talks). The request takes ``len * char time``
    on the line; a reply starts ``turnaround_ms`` after the request ended and
    each byte arrives one character time after the previous one.

    The clock: ``ticks_ms()``, ``ticks_diff(a, b)`` and ``sleep_ms(ms)`` are
    what the master gets instead of ``time``; ``read`` advances it to the
    arrival of the last byte returned, or to the deadline when short.

    Observations for tests: ``writes`` (requests sent), ``min_silence_us``
    (shortest quiet time before a request, ``None`` until the second frame),
    ``silence_violations`` (requests sent less than t3.5 after the last bus
    activity), ``collisions`` (requests sent while reply bytes were still on
    the line) and ``flushed`` (bytes discarded by ``flush_input``).
    """

    def __init__(self, *slaves, baud=9600, turnaround_ms=3, char_bits=10):
        self.slaves = list(slaves)
        self.baud = baud
        self.char_us = (char_bits * 1000000 + baud - 1) // baud
        self.t35_us = silence_us(baud)
        self.turnaround_us = turnaround_ms * 1000
        self.now_us = 0
        self.writes = 0
        self.min_silence_us = None
        self.silence_violations = 0
        self.collisions = 0
        self.flushed = 0
        self._manipulator = None
        self._data = bytearray()  # received bytes not yet read ...
        self._at = []  # ... and their arrival times, same index
        self._pos = 0  # next unread index
        self._last_on_line = -1  # end of the latest frame on the line (either way)

    # -- clock ----------------------------------------------------------

    def ticks_ms(self):
        return self.now_us // 1000

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        if ms > 0:
            self.now_us += ms * 1000

    # -- fault hook -----------------------------------------------------

    def set_manipulator(self, fn):
        """Install ``fn(reply) -> parts`` applied to every slave reply (None removes it).

        ``parts`` is ``None`` (drop the reply), bytes, or a list whose items
        are bytes (sent back to back) or ints (a pause of that many ms before
        the next item): split ``[r[:3], 50, r[3:]]``, corrupt, delay ``[400, r]``,
        add garbage ``[b"\\x55\\xaa", r]``.
        """
        self._manipulator = fn

    def inject(self, data, delay_ms=0):
        """Put ``data`` on the line ``delay_ms`` from now, unasked (noise, a late reply)."""
        self._schedule(data, self.now_us + delay_ms * 1000)

    # -- Link -----------------------------------------------------------

    def write(self, buf):
        now = self.now_us
        if self._last_on_line > now:
            self.collisions += 1
        elif self._last_on_line >= 0:
            gap = now - self._last_on_line
            if self.min_silence_us is None or gap < self.min_silence_us:
                self.min_silence_us = gap
            if gap < self.t35_us:
                self.silence_violations += 1
        self.writes += 1
        self.now_us = now + len(buf) * self.char_us
        self._last_on_line = max(self._last_on_line, self.now_us)
        request = bytes(buf)
        reply = None
        for slave in self.slaves:
            reply = slave(request)
            if reply is not None:
                break
        if reply is None:
            return
        parts = reply if self._manipulator is None else self._manipulator(reply)
        if parts is None:
            return
        if isinstance(parts, (bytes, bytearray)):
            parts = (parts,)
        t = self.now_us + self.turnaround_us
        for part in parts:
            if isinstance(part, int):
                t += part * 1000
            else:
                t = self._schedule(part, t)

    def read(self, n, timeout_ms):
        if n <= 0:
            return b""
        deadline = self.now_us + timeout_ms * 1000
        start = self._pos
        end = start
        limit = min(len(self._data), start + n)
        while end < limit and self._at[end] <= deadline:
            end += 1
        if end - start == n:
            self.now_us = max(self.now_us, self._at[end - 1])
        else:
            self.now_us = deadline
        out = bytes(self._data[start:end])
        self._pos = end
        self._compact()
        return out

    def flush_input(self):
        now = self.now_us
        end = self._pos
        while end < len(self._data) and self._at[end] <= now:
            end += 1
        self.flushed += end - self._pos
        self._pos = end
        self._compact()

    # -- internals --------------------------------------------------------

    def _schedule(self, data, t):
        """Queue ``data``, its first byte starting at ``t``; returns when the last arrives."""
        # The line carries one frame at a time: bytes that would overlap the
        # ones already on it queue behind them, so arrival order is kept.
        t = max(t, self._last_on_line)
        for b in data:
            t += self.char_us
            self._data.append(b)
            self._at.append(t)
        self._last_on_line = t
        return t

    def _compact(self):
        if self._pos and self._pos == len(self._data):
            self._data = bytearray()
            self._at = []
            self._pos = 0


class FakeSlave:
    """A Modbus RTU slave answering FC 1..4 from dicts ``{address: value}``.

    Behaves like a well-made field device: ignores frames with a bad CRC or
    another unit id (no reply), answers exception 1 for a function code it
    has no table for, 3 for an illegal count, 2 when any address in the range
    is missing. ``dead = True`` makes it silent; ``exception = code`` makes
    it answer every request with that exception. ``requests`` counts frames
    addressed to it (answered or not).
    """

    def __init__(self, unit, inputs=None, holding=None, discrete=None, coils=None):
        self.unit = unit
        self.tables = {1: coils, 2: discrete, 3: holding, 4: inputs}
        self.dead = False
        self.exception = None
        self.requests = 0

    def __call__(self, request):
        try:
            unit, fc, addr, count = modbus.parse_request(request)
        except ModbusError:
            return None
        if unit != self.unit:
            return None
        self.requests += 1
        if self.dead:
            return None
        if self.exception is not None:
            return modbus.build_exception(unit, fc, self.exception)
        table = self.tables.get(fc)
        if table is None:
            return modbus.build_exception(unit, fc, 1)
        limit = modbus.MAX_BITS if fc <= 2 else modbus.MAX_REGISTERS
        if not 1 <= count <= limit:
            return modbus.build_exception(unit, fc, 3)
        values = []
        for a in range(addr, addr + count):
            if a not in table:
                return modbus.build_exception(unit, fc, 2)
            values.append(table[a])
        return modbus.build_response(unit, fc, values)
