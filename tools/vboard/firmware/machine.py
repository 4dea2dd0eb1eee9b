# Virtual board firmware: `machine` as the ESP32 port has it (ports/esp32:
# modmachine.c, machine_pin.c, machine_uart.c, machine_wdt.c, machine_rtc.c),
# bridged to the board's hardware (tools/virtual_board.mjs).
#
# Names, defaults, errors and blocking follow the ESP32 port: UART reads wait
# `timeout` ms for the first byte and `timeout_char` ms for the rest (one
# uart_read_bytes call each), `read(n)` repeats that until n bytes or a call
# brings nothing, and answers None when nothing came; `write` returns once the
# bytes fit the transmit buffer and `txdone()` is True when the last stop bit
# has left. The wire runs at the configured baud rate.
import _vb
import _vboard

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_NO_PIN = (20, 24, 28, 29, 30, 31)


def _pin_id(p):
    if isinstance(p, Pin):
        return p._id
    if not isinstance(p, int) or p < 0 or p > 39 or p in _NO_PIN:
        raise ValueError("invalid pin")
    return p


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0 = 0
    DRIVE_1 = 1
    DRIVE_2 = 2
    DRIVE_3 = 3

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self._id = _pin_id(id)
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and self._id >= 34:
            raise ValueError("pin can only be input")
        # The level first, then the mode, as the port does: no glitch on the line.
        _vb.call(
            "pin",
            "",
            self._id,
            -1 if mode is None else mode,
            -1 if value is None else int(bool(value)),
        )
        if pull is not None and pull != -1:
            _vb.call("pin_pull", "", self._id, pull)

    def value(self, x=None):
        if x is None:
            return _vb.call("pin", "", self._id, -1, -1)
        _vb.call("pin", "", self._id, -1, int(bool(x)))
        return None

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def irq(self, handler=None, trigger=3, wake=None):
        raise OSError("virtual board: pin interrupts are not wired")

    def __repr__(self):
        return "Pin(%d)" % self._id


class UART:
    INV_TX = 1
    INV_RX = 2
    INV_RTS = 4
    INV_CTS = 8
    RTS = 1
    CTS = 2
    IRQ_RX = 1
    IRQ_RXIDLE = 4096
    IRQ_BREAK = 2

    def __init__(self, id, baudrate=None, bits=None, parity=-1, stop=None, **kw):
        if not isinstance(id, int) or not 0 <= id < 3:
            raise ValueError("UART(%s) does not exist" % (id,))
        self._id = id
        self.baudrate = 115200
        self.bits = 8
        self.parity = None
        self.stop = 1
        self.tx = (1, 10, 17)[id]
        self.rx = (3, 9, 16)[id]
        self.rts = -1
        self.cts = -1
        self.txbuf = 256
        self.rxbuf = 256  # IDF minimum
        self.timeout = 0
        self.timeout_char = 0
        self.init(baudrate, bits, parity, stop, **kw)

    def init(
        self,
        baudrate=None,
        bits=None,
        parity=-1,
        stop=None,
        *,
        tx=-1,
        rx=-1,
        rts=-1,
        cts=-1,
        txbuf=-1,
        rxbuf=-1,
        timeout=-1,
        timeout_char=-1,
        invert=-1,
        flow=-1,
    ):
        if self._id == 0 and (
            (txbuf >= 0 and txbuf != self.txbuf) or (rxbuf >= 0 and rxbuf != self.rxbuf)
        ):
            raise ValueError("REPL UART buffer size is fixed")
        if txbuf >= 0:
            self.txbuf = txbuf
        if rxbuf >= 0:
            self.rxbuf = rxbuf
        if baudrate is not None and baudrate > 0:
            self.baudrate = baudrate
        if bits is not None:
            if bits not in (5, 6, 7, 8):
                raise ValueError("invalid data bits")
            self.bits = bits
        if parity != -1:
            if parity is not None and parity not in (0, 1):
                raise ValueError("invalid parity")
            self.parity = parity
        if stop is not None:
            if stop not in (1, 2):
                raise ValueError("invalid stop bits")
            self.stop = stop
        for name, val in (("tx", tx), ("rx", rx), ("rts", rts), ("cts", cts)):
            if val != -1:
                setattr(self, name, _pin_id(val))
        if timeout != -1:
            self.timeout = timeout
        if timeout_char != -1:
            self.timeout_char = timeout_char
        frame = 1 + self.bits + (0 if self.parity is None else 1) + self.stop
        _vb.call("uart_open", "%d,%d" % (self.rxbuf, self.txbuf), self._id, self.baudrate, frame)

    def deinit(self):
        _vb.call("uart_close", "", self._id)

    def any(self):
        return _vb.call("uart_any", "", self._id)

    def _read1(self, buf):
        # one mp_machine_uart_read: first byte within timeout, the rest within timeout_char
        try:
            return _vb.fetch("uart_read", buf, "", self._id, self.timeout, self.timeout_char)
        except OSError as e:
            if e.errno == 11:  # EAGAIN: nothing came in time
                return 0
            raise

    def read(self, nbytes=-1):
        if nbytes is not None and nbytes >= 0:
            buf = bytearray(nbytes)
            got = 0
            while got < nbytes:
                n = self._read1(memoryview(buf)[got:])
                if n == 0:
                    break
                got += n
            if got == 0 and nbytes > 0:
                return None
            return bytes(buf) if got == nbytes else bytes(buf[:got])
        out = b""
        chunk = bytearray(256)
        while True:
            n = self._read1(chunk)
            if n == 0:
                break
            out += chunk[:n]
        return out if out else None

    def readinto(self, buf, nbytes=-1):
        mv = memoryview(buf)
        if nbytes is not None and nbytes >= 0:
            mv = mv[:nbytes]
        got = 0
        while got < len(mv):
            n = self._read1(mv[got:])
            if n == 0:
                break
            got += n
        return got if got or not len(mv) else None

    def readline(self):
        out = b""
        one = bytearray(1)
        while True:
            if self._read1(one) == 0:
                break
            out += one
            if one[0] == 10:
                break
        return out if out else None

    def write(self, buf):
        return _vb.call("uart_write", "", self._id, data=buf)

    def txdone(self):
        return bool(_vb.call("uart_txdone", "", self._id))

    def flush(self):
        limit = (3 + self.txbuf) * 13000 * 2 // self.baudrate
        if not _vb.call("uart_wait_tx", "", self._id, limit):
            raise OSError(116)  # ETIMEDOUT

    def sendbreak(self):
        _vb.call("uart_wait_tx", "", self._id, 1000)
        _vboard.sleep(max(1, 13000 // self.baudrate))

    def irq(self, handler=None, trigger=0, hard=False):
        raise OSError("virtual board: UART interrupts are not wired")

    def __repr__(self):
        return (
            "UART(%u, baudrate=%u, bits=%u, parity=%s, stop=%u, tx=%d, rx=%d, rts=%d, cts=%d, "
            "txbuf=%u, rxbuf=%u, timeout=%u, timeout_char=%u, irq=0)"
            % (
                self._id,
                self.baudrate,
                self.bits,
                self.parity,
                self.stop,
                self.tx,
                self.rx,
                self.rts,
                self.cts,
                self.txbuf,
                self.rxbuf,
                self.timeout,
                self.timeout_char,
            )
        )


class WDT:
    def __init__(self, id=0, timeout=5000):
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        _vb.call("wdt_start", "", timeout)

    def feed(self):
        _vboard.feed()


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        import time

        if dt is None:
            ms = _vboard.millis()
            t = time.gmtime(_vboard.secs())
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], ms * 1000)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        _vb.call("rtc_set", "%d" % (secs + 946684800), dt[7] // 1000)
        return None

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            buf = bytearray(2048)
            return bytes(buf[: _vb.fetch("rtc_memory", buf)])
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _vb.call("rtc_memory", "set", data=data)
        return None


def reset():
    _vb.call("reset")
    while True:  # the hardware stops this CPU; nothing after this runs
        _vboard.sleep(1000)


def soft_reset():
    raise SystemExit


def reset_cause():
    return _vboard.cause()


def wake_reason():
    return 0


def unique_id():
    buf = bytearray(6)
    _vb.fetch("unique_id", buf)
    return bytes(buf)


_freq = [160000000]


def freq(hz=None):
    if hz is None:
        return _freq[0]
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _freq[0] = hz
    return None


def idle():
    _vboard.sleep(0)


def lightsleep(ms=None):
    _vboard.sleep(ms if ms is not None else 0x3FFFFFFF)


def deepsleep(ms=0):
    _vb.call("reset", "deepsleep", ms)
    while True:
        _vboard.sleep(1000)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass
