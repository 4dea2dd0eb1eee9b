"""Modbus RTU master: one :class:`Bus` per RS-485 port, one :class:`Poller` per config.

The Bus owns the line discipline: t3.5 silence before every request,
a deadline per reply (``timeout_ms`` for the slave to start answering plus
the time the expected reply takes on the wire), retries, resynchronisation
past garbage or other units' frames, and flushing after a failed exchange so
a late reply is never taken for the next answer.

The Poller reads every configured device per its read plan and keeps each
device's health: after ``down_after`` consecutive exchanges without a valid
reply a device is *down* and is tried only once per backoff interval
(doubling up to ``backoff_max_ms``, no retries), so one dead sensor costs at
most one timeout per backoff period instead of stalling every cycle. The
first valid reply (data or a Modbus exception) brings it back.

Time comes in through the constructor (``clock`` returns ms like
``time.ticks_ms``; ``ticks_diff`` like ``time.ticks_diff``), so the same
code runs on a board, on a host and on :class:`edge.fakelink.FakeLink`'s virtual
clock. Buffers are allocated once; the poll loop reuses them.
"""

from edge import modbus
from edge.errors import (
    ConfigError,
    ModbusCRCError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusFrameError,
    ModbusTimeout,
)
from edge.link import silence_us
from edge.modbus import decode_point

# edge.profiles (register maps: reading, checking, planning) is imported
# where a Poller is built, not here: a terminal unloads it after boot.

# Bus.transfer results. Codes up to EXCEPTION mean the slave answered.
OK = 0
EXCEPTION = 1
TIMEOUT = 2
CRC = 3
FRAME = 4
LINK = 5

UNREACHABLE = None  # a point's value when its device gave no valid reply this cycle


def _sub(a, b):
    return a - b


class Bus:
    """Modbus RTU master on one link.

    ``clock()`` returns milliseconds; the other arguments are keyword-only.
    ``ticks_diff(a, b)`` is ``a - b`` for that clock (default: plain
    subtraction, right for non-wrapping clocks); ``sleep_ms(ms)`` waits out
    the inter-frame silence (default: spin on the clock). ``timeout_ms`` is
    how long a slave may take to start replying (the wire time of the
    expected reply is added); ``retries`` is the number of extra attempts
    after a timeout, CRC or frame error (an exception reply is an answer and
    is not retried).

    Counters (``counters()``): requests (frames sent), replies (good data
    replies), retries, timeouts, crc_errors, frame_errors (wrong unit,
    function, byte count, garbage only, short frame), exceptions,
    link_errors (the HAL raised OSError) and discarded (bytes thrown away:
    leading garbage, other units' frames, trailing bytes).

    Raises ConfigError at construction for a baud rate, timeout or retry
    count that makes no sense.
    """

    def __init__(
        self, link, clock, *, sleep_ms=None, baud=9600, timeout_ms=300, retries=1, ticks_diff=None
    ):
        if not isinstance(baud, int) or not 300 <= baud <= 1000000:
            raise ConfigError("baud rate %r out of range 300..1000000" % (baud,))
        if not isinstance(timeout_ms, int) or not 10 <= timeout_ms <= 10000:
            raise ConfigError("modbus timeout_ms %r out of range 10..10000" % (timeout_ms,))
        if not isinstance(retries, int) or not 0 <= retries <= 5:
            raise ConfigError("modbus retries %r out of range 0..5" % (retries,))
        self._link = link
        self.clock = clock
        self.ticks_diff = ticks_diff or _sub
        self._sleep = sleep_ms
        self.baud = baud
        self.timeout_ms = timeout_ms
        self.max_retries = retries
        # The ms clock can be up to 1 ms behind real time, so wait one more.
        self.gap_ms = (silence_us(baud) + 999) // 1000 + 1
        # 11 bits per character (start, 8 data, parity or 2nd stop, stop):
        # the longest a character can take, so a slow but valid reply fits.
        self._char_us = (11000000 + baud - 1) // baud
        self._req = bytearray(modbus.REQUEST_LENGTH)
        self._rx = bytearray(modbus.MAX_FRAME)
        self._last = clock()  # end of the last bus activity we know of
        self.last_exception = 0  # code of the latest exception reply
        self.last_frame_error = ""  # reason of the latest frame error
        self.requests = 0
        self.replies = 0
        self.retries = 0
        self.timeouts = 0
        self.crc_errors = 0
        self.frame_errors = 0
        self.exceptions = 0
        self.link_errors = 0
        self.discarded = 0

    def counters(self):
        """The counters as a new dict (for the status frame)."""
        return {
            "requests": self.requests,
            "replies": self.replies,
            "retries": self.retries,
            "timeouts": self.timeouts,
            "crc_errors": self.crc_errors,
            "frame_errors": self.frame_errors,
            "exceptions": self.exceptions,
            "link_errors": self.link_errors,
            "discarded": self.discarded,
        }

    def read(self, unit, fc, addr, count):
        """Read ``count`` registers or bits -> list of ints.

        Raises ModbusTimeout, ModbusCRCError, ModbusFrameError(reason) when
        every attempt failed (the last failure decides), ModbusExceptionResponse
        (code) when the slave refused, ModbusError when the link itself
        failed, ConfigError for arguments the protocol cannot express.
        """
        out = [0] * count
        st = self.transfer(unit, fc, addr, count, out)
        if st == OK:
            return out
        if st == TIMEOUT:
            raise ModbusTimeout("unit %d: no reply" % unit)
        if st == CRC:
            raise ModbusCRCError("unit %d: reply CRC mismatch" % unit)
        if st == FRAME:
            raise ModbusFrameError(self.last_frame_error)
        if st == EXCEPTION:
            raise ModbusExceptionResponse(self.last_exception)
        raise ModbusError("unit %d: serial link error" % unit)

    def transfer(self, unit, fc, addr, count, out, *, retries=-1):
        """Read into ``out[0:count]`` without raising; returns OK or a failure code.

        ``retries`` -1 uses the bus setting. On EXCEPTION the code is in
        ``last_exception``; on FRAME the reason is in ``last_frame_error``.
        Only ConfigError (bad arguments) is raised.
        """
        modbus.write_read_request(self._req, unit, fc, addr, count)
        tries = self.max_retries if retries < 0 else retries
        attempt = 0
        while True:
            st = self._attempt(unit, fc, count, out)
            if st <= EXCEPTION or attempt >= tries:
                return st
            attempt += 1
            self.retries += 1

    def _attempt(self, unit, fc, count, out):
        link = self._link
        try:
            # Bytes that arrived since the last exchange belong to nobody.
            link.flush_input()
            self._wait_silence()
            link.write(self._req)
        except OSError:
            self.link_errors += 1
            self._last = self.clock()
            return LINK
        self.requests += 1
        st = self._receive(unit, fc, count, out)
        if st > EXCEPTION:
            # A reply still on its way must not be read as the next answer.
            try:
                link.flush_input()
            except OSError:
                self.link_errors += 1
        self._last = self.clock()
        return st

    def _wait_silence(self):
        """Wait until the line has been quiet for t3.5 since the last activity.

        Whatever arrives meanwhile (a reply that came too late, another
        master's traffic) is discarded and restarts the wait, so the next
        request is never sent over a frame still on the line. A line that
        never goes quiet is given up on after ``timeout_ms`` and we talk
        anyway: the reply check sorts out the result.
        """
        t0 = self.clock()
        while True:
            now = self.clock()
            left = self.gap_ms - self.ticks_diff(now, self._last)
            if left <= 0:
                return
            if self._sleep is not None:
                self._sleep(left)
            else:
                while self.ticks_diff(self.clock(), now) < left:
                    pass
            heard = self._link.read(modbus.MAX_FRAME, 0)
            if heard:
                self.discarded += len(heard)
                self._last = self.clock()
                if self.ticks_diff(self._last, t0) > self.timeout_ms:
                    return

    def _receive(self, unit, fc, count, out):
        link = self._link
        rx = self._rx
        cap = len(rx)
        full = modbus.reply_length(fc, count)
        limit = self.timeout_ms + (full * self._char_us + 999) // 1000
        t0 = self.clock()
        n = 0
        bad = TIMEOUT  # what the exchange failed with, if it does
        while True:
            if n:
                r = modbus.check_reply(rx, n, unit, fc, count)
                if r > 0:
                    modbus.decode_into(rx, fc, count, out)
                    self.replies += 1
                    self.discarded += n - r
                    return OK
                if r == modbus.E_EXCEPTION:
                    self.last_exception = rx[2]
                    self.exceptions += 1
                    return EXCEPTION
                if r < 0:
                    if r == modbus.E_CRC:
                        bad = CRC
                    elif bad == TIMEOUT:
                        bad = FRAME
                        self.last_frame_error = (
                            "unit"
                            if r == modbus.E_UNIT
                            else "fc"
                            if r == modbus.E_FUNCTION
                            else "count"
                        )
                    n = self._resync(n, unit, fc)
                    if r == modbus.E_CRC and n == 0:
                        break  # a damaged reply, nothing after it: fail now, not at the deadline
                    continue
            want = full if n >= 3 and rx[1] == fc else modbus.MIN_REPLY
            left = limit - self.ticks_diff(self.clock(), t0)
            if left <= 0:
                break
            try:
                chunk = link.read(want - n, left)
            except OSError:
                self.link_errors += 1
                return LINK
            for b in chunk:
                if n < cap:
                    rx[n] = b
                    n += 1
        if n:
            # The deadline cut a plausible frame short.
            self.discarded += n
            if bad == TIMEOUT:
                bad = FRAME
                self.last_frame_error = "short"
        if bad == TIMEOUT:
            self.timeouts += 1
        elif bad == CRC:
            self.crc_errors += 1
        else:
            self.frame_errors += 1
        return bad

    def _resync(self, n, unit, fc):
        """Drop bytes up to the next place a reply for us could start; returns new length."""
        rx = self._rx
        efc = fc | 0x80
        i = 1
        while i < n:
            if rx[i] == unit and (i + 1 == n or rx[i + 1] == fc or rx[i + 1] == efc):
                break
            i += 1
        self.discarded += i
        for j in range(n - i):
            rx[j] = rx[i + j]
        return n - i


class Device:
    """One slave on the bus: its read plan, latest values and health.

    ``values[k]`` is the value of ``profile["points"][k]`` from the latest
    cycle, or UNREACHABLE. The profile itself is not kept (on a terminal its
    dicts would stay on the heap for nothing, about 1 KB per device); ``model``
    names it (None for a profile given inline), so a caller can look its
    points up in the table it gave the Poller. ``up`` is False while the device is backed off.
    Statistics: ``polls`` (cycles it was asked), ``answered`` (cycles with a
    valid reply), ``skipped`` (cycles left out while down), ``bus_ms`` (bus
    time spent on it), ``fails`` (consecutive cycles without a valid reply).
    """

    def __init__(self, name, unit, profile, model=None):
        self.name = name
        self.unit = unit
        self.model = model
        from edge.profiles import plan_reads

        self.plan = plan_reads(profile)
        self.values = [UNREACHABLE] * len(profile["points"])
        self.up = True
        self.fails = 0
        self.backoff_ms = 0
        self.last_try = 0
        self.polls = 0
        self.answered = 0
        self.skipped = 0
        self.bus_ms = 0

    def mark_unreachable(self, items):
        values = self.values
        for item in items:
            values[item[0]] = UNREACHABLE


class Poller:
    """Reads every configured device once per :meth:`poll`; never raises for bad replies.

    ``devices`` is a list of ``{"name": str, "unit": 1..247, "model": str}``
    (the model looked up in ``profiles``, default the built-in table from
    :func:`edge.profiles.profile_table`), or with ``"profile": {...}`` inline
    instead of ``"model"``. Raises ConfigError at construction for a bad
    device list: duplicate names or unit ids, unknown models, bad units.
    """

    def __init__(
        self, bus, devices, *, profiles=None, down_after=3, backoff_ms=10000, backoff_max_ms=300000
    ):
        if not isinstance(down_after, int) or down_after < 1:
            raise ConfigError("down_after must be a positive integer, got %r" % (down_after,))
        if not isinstance(backoff_ms, int) or not 0 < backoff_ms <= backoff_max_ms:
            raise ConfigError("need 0 < backoff_ms <= backoff_max_ms")
        self.bus = bus
        self.down_after = down_after
        self.backoff_ms = backoff_ms
        self.backoff_max_ms = backoff_max_ms
        devices = _check_list(devices)
        if profiles is None:
            from edge.profiles import profile_table

            models = [d.get("model") for d in devices if isinstance(d, dict)]
            profiles = profile_table(None, [m for m in models if isinstance(m, str)])
        self.devices = [_device(d, profiles) for d in devices]
        names = set()
        units = set()
        for d in self.devices:
            if d.name in names or d.unit in units:
                raise ConfigError("device %r: name and unit id must be unique on a bus" % d.name)
            names.add(d.name)
            units.add(d.unit)
        biggest = 1
        for d in self.devices:
            for group in d.plan:
                biggest = max(biggest, group[2])
        self._regs = [0] * biggest
        self.results = [d.values for d in self.devices]
        self.cycles = 0
        self.skipped = 0
        self.downs = 0
        self.recoveries = 0

    def poll(self):
        """Read all devices that are due; returns ``results``.

        ``results[i]`` is ``devices[i].values`` (the same list objects every
        cycle, updated in place): raw values per point, UNREACHABLE where the
        device gave no valid reply.
        """
        self.cycles += 1
        for dev in self.devices:
            self._read(dev)
        return self.results

    def poll_device(self, i):
        """Read ``devices[i]`` alone, for a caller that keeps a schedule per
        device (the agent); returns its values, ``results[i]``. A device that
        is backed off is skipped as in :meth:`poll`; ``cycles`` counts
        :meth:`poll` calls only."""
        dev = self.devices[i]
        self._read(dev)
        return dev.values

    def _read(self, dev):
        bus = self.bus
        clock = bus.clock
        diff = bus.ticks_diff
        start = clock()
        if not dev.up and diff(start, dev.last_try) < dev.backoff_ms:
            dev.skipped += 1
            self.skipped += 1
            for group in dev.plan:
                dev.mark_unreachable(group[3])
            return
        regs = self._regs
        dev.polls += 1
        dev.last_try = start
        answered = False
        silent = False
        retries = -1 if dev.up else 0
        for group in dev.plan:
            items = group[3]
            if silent:
                dev.mark_unreachable(items)
                continue
            st = bus.transfer(dev.unit, group[0], group[1], group[2], regs, retries=retries)
            if st == OK:
                answered = True
                values = dev.values
                for item in items:
                    values[item[0]] = decode_point(item, regs)
            else:
                dev.mark_unreachable(items)
                if st == EXCEPTION:
                    answered = True
                else:
                    # Don't spend another timeout on a device that just gave none.
                    silent = True
        dev.bus_ms += diff(clock(), start)
        self._health(dev, answered)

    def _health(self, dev, answered):
        if answered:
            dev.answered += 1
            dev.fails = 0
            if not dev.up:
                dev.up = True
                dev.backoff_ms = 0
                self.recoveries += 1
            return
        dev.fails += 1
        if dev.up:
            if dev.fails >= self.down_after:
                dev.up = False
                dev.backoff_ms = self.backoff_ms
                self.downs += 1
        else:
            dev.backoff_ms = min(dev.backoff_ms * 2, self.backoff_max_ms)

    def counters(self):
        """Bus and poller counters as a new dict (for the status frame)."""
        c = self.bus.counters()
        c["cycles"] = self.cycles
        c["skipped"] = self.skipped
        c["downs"] = self.downs
        c["recoveries"] = self.recoveries
        c["devices_down"] = sum(1 for d in self.devices if not d.up)
        return c


def _check_list(devices):
    if not isinstance(devices, list) or not devices:
        raise ConfigError("devices must be a non-empty list")
    return devices


def _device(d, table):
    if not isinstance(d, dict):
        raise ConfigError("a device must be an object, got %r" % (d,))
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("device: 'name' must be a non-empty string, got %r" % (name,))
    unit = d.get("unit")
    if not isinstance(unit, int) or isinstance(unit, bool) or not 1 <= unit <= 247:
        raise ConfigError("device %r: 'unit' must be 1..247, got %r" % (name, unit))
    if "profile" in d:
        from edge.profiles import validate_profile

        profile = validate_profile(d["profile"])
        model = None
    else:
        model = d.get("model")
        if model not in table:
            raise ConfigError("device %r: unknown model %r" % (name, model))
        profile = table[model]
    return Device(name, unit, profile, model)
