"""The serial link a Modbus master talks through.

:class:`Link` is the contract the HALs implement (``machine.UART`` on a board,
pyserial on a host); :mod:`edge.fakelink` plays the line inside a test
process. The board imports this module, so the fakes live apart: their code
would take heap on a terminal that never uses it.
"""


class Link:
    """Byte pipe to the RS-485 bus. HALs subclass this.

    - ``write(buf)`` sends the whole frame and returns once it is on the line
      (the HAL waits for the UART to drain and releases the driver-enable pin),
      so the reply cannot be missed and the master's clock after ``write`` is
      the end of the request.
    - ``read(n, timeout_ms)`` returns up to ``n`` bytes: as soon as ``n`` have
      arrived, otherwise whatever arrived when ``timeout_ms`` ran out (possibly
      ``b""``). It never returns more than ``n`` bytes.
    - ``flush_input()`` discards every byte received so far.

    A broken port raises ``OSError``; the master counts it and carries on.
    """

    def write(self, buf):
        raise NotImplementedError

    def read(self, n, timeout_ms):
        raise NotImplementedError

    def flush_input(self):
        raise NotImplementedError


def silence_us(baud):
    """Minimum inter-frame silence t3.5 in microseconds (Modbus over serial, 2.5.1.1).

    3.5 character times of 11 bits; above 19200 baud the spec fixes it at
    1750 us because timers cannot resolve the shorter value reliably.
    """
    if baud > 19200:
        return 1750
    return (38500000 + baud - 1) // baud
