"""The RS-485 link of the terminal's Modbus master, over pyserial.

Implements :class:`edge.link.Link` for a USB RS-485 adapter or a pty served
by ``firmware_sim``. Adapters switch the driver themselves (automatic
direction control), so ``write`` only has to wait for the UART to drain,
after which the master's clock is the end of the request, as the contract
asks. Also provides the clock (``ticks_ms``, ``ticks_diff``, ``sleep_ms``)
the master takes, from ``time.monotonic_ns``.
"""

import time

from edge.link import Link

PARITIES = {"N": "N", "E": "E", "O": "O"}


class SerialLink(Link):
    """A serial port as a Modbus link; use as a context manager or call ``close()``.

    Opening raises ``OSError`` (pyserial's ``SerialException`` is one) when
    the port does not exist, is busy or is not a serial port; a port that
    fails later raises ``OSError`` from ``read``/``write``, as the contract
    says.
    """

    def __init__(self, port, baud=9600, parity="N", stopbits=1, exclusive=True):
        import serial

        if parity not in PARITIES:
            raise ValueError("parity must be N, E or O")
        self.port = port
        self.baud = baud
        self._timeout = None
        self._serial = serial.Serial(
            port,
            baudrate=baud,
            bytesize=serial.EIGHTBITS,
            parity=PARITIES[parity],
            stopbits=serial.STOPBITS_TWO if stopbits == 2 else serial.STOPBITS_ONE,
            timeout=0,
            exclusive=exclusive,
        )
        self._timeout = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def write(self, buf):
        self._serial.write(bytes(buf))
        self._serial.flush()  # tcdrain: the frame is on the line when we return

    def read(self, n, timeout_ms):
        timeout = max(0, timeout_ms) / 1000
        if timeout != self._timeout:
            # Changing it reconfigures the port; the master keeps it constant.
            self._serial.timeout = timeout
            self._timeout = timeout
        # pyserial returns as soon as n bytes are in, or what came by the timeout.
        return bytes(self._serial.read(n))

    def flush_input(self):
        self._serial.reset_input_buffer()

    # -- clock for the master ------------------------------------------------

    @staticmethod
    def ticks_ms():
        return time.monotonic_ns() // 1000000

    @staticmethod
    def ticks_diff(a, b):
        return a - b

    @staticmethod
    def sleep_ms(ms):
        if ms > 0:
            time.sleep(ms / 1000)
