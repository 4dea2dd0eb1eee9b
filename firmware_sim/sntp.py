"""A small SNTP server (RFC 4330) on a loopback UDP port: the time server of the
virtual boards (``python -m firmware_sim boards``) and of the tests.

It answers every well-formed client request (mode 3) with a server reply
(mode 4, stratum 2) whose timestamps are this machine's clock plus ``offset``
seconds, and counts what it answered. Malformed datagrams are counted and
ignored, as a real server would drop them::

    with SntpServer() as ntp:
        ...  # point the terminal at 127.0.0.1:ntp.port
        assert ntp.answered >= 1
"""

from __future__ import annotations

import socket
import struct
import threading
import time

NTP_TO_UNIX = 2208988800  # seconds from 1900-01-01 to 1970-01-01 (RFC 868)


def ntp_timestamp(unix: float) -> bytes:
    """64-bit NTP timestamp: seconds since 1900 (mod 2**32) and a binary fraction."""
    secs = int(unix) + NTP_TO_UNIX
    frac = int((unix - int(unix)) * (1 << 32))
    return struct.pack("!II", secs & 0xFFFFFFFF, frac & 0xFFFFFFFF)


class SntpServer:
    """``with SntpServer(offset=0) as ntp:``; ``ntp.port`` is where it listens."""

    def __init__(self, host: str = "127.0.0.1", offset: float = 0.0) -> None:
        self.offset = offset
        self.answered = 0
        self.rejected = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp", daemon=True)

    def __enter__(self) -> SntpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time() + self.offset
            if len(data) < 48 or data[0] & 0x07 != 3:
                self.rejected += 1
                continue
            version = (data[0] >> 3) & 0x07
            reply = bytearray(48)
            reply[0] = (version << 3) | 4  # no leap warning, client's version, mode 4
            reply[1] = 2  # stratum: a secondary server
            reply[2] = data[2]  # poll interval, echoed
            reply[3] = 0xEC  # precision: about a microsecond
            reply[12:16] = b"LOCL"
            reply[16:24] = ntp_timestamp(received)  # reference timestamp
            reply[24:32] = data[40:48]  # originate = the client's transmit timestamp
            reply[32:40] = ntp_timestamp(received)
            reply[40:48] = ntp_timestamp(time.time() + self.offset)
            self._sock.sendto(bytes(reply), peer)
            self.answered += 1
