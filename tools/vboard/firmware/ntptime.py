# Virtual board firmware: `ntptime` as the ESP32 firmware freezes it
# (micropython-lib micropython/net/ntptime): module settings `host` and
# `timeout`, time() asks `host` port 123 over UDP (SNTP, RFC 4330) and returns
# seconds since the port's epoch, settime() sets the RTC in UTC.
import socket
import struct
from time import gmtime

host = "pool.ntp.org"
timeout = 1

_TO_1970 = 2208988800  # 1900-01-01 to 1970-01-01
_TO_2000 = 3155673600  # 1900-01-01 to 2000-01-01
_ERA = 3913056000  # 2024-01-01: an NTP second count below it belongs to the next era


def time():
    query = bytearray(48)
    query[0] = 0x23  # leap indicator 0, version 4, mode 3 (client)
    addr = socket.getaddrinfo(host, 123)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(query, addr)
        answer = s.recv(48)
    finally:
        s.close()
    secs = struct.unpack("!I", answer[40:44])[0]  # transmit timestamp, whole seconds
    if secs < _ERA:
        secs += 0x100000000
    epoch = gmtime(0)[0]
    if epoch == 2000:
        return secs - _TO_2000
    if epoch == 1970:
        return secs - _TO_1970
    raise Exception("Unsupported epoch: {}".format(epoch))


def settime():
    t = time()
    import machine

    tm = gmtime(t)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
