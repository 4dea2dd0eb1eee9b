# Virtual board firmware: `socket` as the ESP32 port has it (ports/esp32/modsocket.c
# on lwIP), bridged to real TCP and UDP sockets of this machine.
#
# Blocking follows the port: a new socket blocks forever; settimeout(t) bounds
# each wait (ETIMEDOUT after it), settimeout(0)/setblocking(False) never waits
# (EAGAIN, or EINPROGRESS from connect). Errors carry the ESP32's errno values
# (ECONNRESET 104 for a refused connection as lwIP reports it, ETIMEDOUT 116,
# EHOSTUNREACH 118 without a network, ENOTCONN 128); a name that does not
# resolve raises OSError(-202). read/readinto/readline/write behave as
# MicroPython's stream methods: read(n) collects n bytes unless the peer closes
# or a non-blocking read runs dry (then the bytes so far, or None).
import io

import _vb
import _vboard

AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_DGRAM = 2
SOCK_RAW = 3
IPPROTO_IP = 0
IPPROTO_TCP = 6
IPPROTO_UDP = 17
SOL_SOCKET = 0xFFF
SO_REUSEADDR = 0x0004
SO_BROADCAST = 0x0020
SO_BINDTODEVICE = 0x100B
IP_ADD_MEMBERSHIP = 3
TCP_NODELAY = 1
MSG_PEEK = 1
MSG_DONTWAIT = 8

_EAGAIN = 11
_ENOTCONN = 128
_NEW, _CONNECTED, _PEER_CLOSED = 0, 1, 2


def _resolve(host):
    if host == "":
        return "0.0.0.0"  # noqa: S104  (lwIP reads "" as any address, as the port documents)
    return _vb.query("dns", host)


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    ip = _resolve(host)
    return [(AF_INET, type or SOCK_STREAM, proto, host, (ip, int(port)))]


def _peer(addr):
    return _resolve(addr[0]), int(addr[1])


class socket(io.IOBase):
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self._type = type
        self._state = _NEW if type == SOCK_STREAM else _CONNECTED
        self._id = _vb.call("sock_new", "", type)
        self._t = -1  # ms each wait may take; -1 forever, 0 never

    def settimeout(self, value):
        self._t = -1 if value is None else int(value * 1000)

    def setblocking(self, flag):
        self._t = -1 if flag else 0

    def setsockopt(self, level, opt, value):
        if opt not in (
            SO_REUSEADDR,
            SO_BROADCAST,
            SO_BINDTODEVICE,
            TCP_NODELAY,
            IP_ADD_MEMBERSHIP,
            20,
        ):
            print("Warning: lwip.setsockopt() option not implemented")

    def fileno(self):
        return self._id

    def makefile(self, *args):
        return self

    def bind(self, addr):
        self._state = _CONNECTED
        ip, port = _peer(addr)
        _vb.call("sock_bind", ip, self._id, port)

    def listen(self, backlog=2):
        raise OSError(95)  # EOPNOTSUPP: the virtual board serves nobody

    def accept(self):
        raise OSError(95)

    def connect(self, addr):
        ip, port = _peer(addr)
        self._state = _CONNECTED
        _vb.call("sock_connect", ip, self._id, port, self._t)

    def _recv_into(self, mv, flags=0):
        # one lwip_recvfrom loop of the port: bytes, 0 at the end of the stream
        if self._state == _NEW:
            raise OSError(_ENOTCONN)
        if self._state == _PEER_CLOSED:
            return 0
        n = _vb.fetch(
            "sock_recv", mv, "", self._id, 0 if flags & MSG_DONTWAIT else self._t, flags & MSG_PEEK
        )
        if n == 0 and self._type == SOCK_STREAM and len(mv):
            self._state = _PEER_CLOSED
        return n

    def recv(self, bufsize, flags=0):
        buf = bytearray(bufsize)
        n = self._recv_into(memoryview(buf), flags)
        return bytes(buf) if n == bufsize else bytes(buf[:n])

    def recvfrom(self, bufsize, flags=0):
        data = self.recv(bufsize, flags)
        ip, _, port = _vboard.text().partition(" ")
        return data, (ip, int(port or 0))

    def _send(self, data):
        if self._state == _NEW and self._type == SOCK_STREAM:
            raise OSError(_ENOTCONN)
        return _vb.call("sock_send", "", self._id, self._t, data=data)

    def send(self, data):
        return self._send(data)

    def sendall(self, data):
        mv = memoryview(data.encode() if isinstance(data, str) else data)
        sent = 0
        while sent < len(mv):
            sent += self._send(mv[sent:])

    def sendto(self, data, addr):
        ip, port = _peer(addr)
        return _vb.call("sock_sendto", ip, self._id, port, self._t, data=data)

    # -- the stream protocol (py/stream.c: mp_stream_rw)
    def readinto(self, buf, nbytes=-1):
        mv = memoryview(buf)
        if nbytes is not None and nbytes >= 0:
            mv = mv[:nbytes]
        got = 0
        while got < len(mv):
            try:
                n = self._recv_into(mv[got:])
            except OSError as e:
                if e.errno == _EAGAIN:
                    return got if got else None
                raise
            if n == 0:
                break
            got += n
        return got

    def read(self, size=-1):
        if size is None or size < 0:
            out = b""
            while True:
                chunk = self.read(256)
                if not chunk:
                    return out if out or chunk is not None else None
                out += chunk
        buf = bytearray(size)
        n = self.readinto(buf)
        if n is None:
            return None
        return bytes(buf) if n == size else bytes(buf[:n])

    def readline(self):
        out = b""
        while True:
            c = self.read(1)
            if not c:
                return out
            out += c
            if c == b"\n":
                return out

    def write(self, buf, off_or_len=None, length=None):
        if isinstance(buf, str):
            buf = buf.encode()
        mv = memoryview(buf)
        if length is not None:
            mv = mv[min(off_or_len, len(mv)) :][:length]
        elif off_or_len is not None:
            mv = mv[:off_or_len]
        done = 0
        while done < len(mv):
            try:
                done += self._send(mv[done:])
            except OSError as e:
                if e.errno == _EAGAIN:
                    return done if done else None
                raise
        return done

    def ioctl(self, req, arg):
        if req == 3:  # MP_STREAM_POLL
            return _vb.call("sock_poll", "", self._id, arg)
        if req == 4:  # MP_STREAM_CLOSE
            self.close()
            return 0
        return -1

    def close(self):
        if self._id >= 0:
            _vb.call("sock_close", "", self._id)
            self._id = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
