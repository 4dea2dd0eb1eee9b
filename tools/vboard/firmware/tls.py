# Virtual board firmware: `tls` as the ESP32 port has it (extmod/modtls_mbedtls.c),
# bridged to the TLS of this machine's Node.js on the board's TCP socket.
#
# As on the board: a client context verifies the server by default; wrapping
# with CERT_REQUIRED needs server_hostname (ValueError otherwise); the handshake
# runs in wrap_socket under the socket's timeout; a certificate that fails
# verification raises ValueError with mbedTLS's verify text; validity dates are
# not checked (ESP-IDF builds mbedTLS without MBEDTLS_HAVE_TIME_DATE). The
# SSLSocket has the board's methods only (no settimeout: set it on the socket
# before wrapping; setblocking passes through to it).
import io

import _vb
import _vboard

MBEDTLS_VERSION = "Mbed TLS 3.6.2"
PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
PROTOCOL_DTLS_CLIENT = 2
PROTOCOL_DTLS_SERVER = 3
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2


def _der_or_pem(data):
    if isinstance(data, str):
        data = data.encode()
    return bytes(data)


class SSLContext:
    def __init__(self, protocol):
        if protocol not in (PROTOCOL_TLS_CLIENT, PROTOCOL_TLS_SERVER):
            raise ValueError("invalid protocol")
        self._server = protocol == PROTOCOL_TLS_SERVER
        self.verify_mode = CERT_NONE if self._server else CERT_REQUIRED
        self._ca = b""
        self._chain = None

    def load_verify_locations(self, cadata):
        cadata = _der_or_pem(cadata)
        _vb.call("tls_check", "ca", data=cadata)  # ValueError("invalid cert") as mbedTLS parses it
        self._ca = cadata

    def load_cert_chain(self, certfile, keyfile):
        self._chain = (_der_or_pem(certfile), _der_or_pem(keyfile))

    def get_ciphers(self):
        return _vb.query("tls_ciphers").split(",")

    def set_ciphers(self, ciphersuite):
        if not ciphersuite:
            raise OSError(-0x5E80)  # MBEDTLS_ERR_SSL_BAD_CONFIG

    def wrap_socket(
        self,
        sock,
        *,
        server_side=False,
        do_handshake_on_connect=True,
        server_hostname=None,
        client_id=None,
    ):
        if server_side or self._server:
            raise OSError("virtual board: TLS server sockets are not wired")
        if server_hostname is None and self.verify_mode == CERT_REQUIRED:
            raise ValueError("CERT_REQUIRED requires server_hostname")
        return SSLSocket(self, sock, server_hostname or "")


class SSLSocket(io.IOBase):
    def __init__(self, ctx, sock, hostname):
        if not hasattr(sock, "_recv_into"):
            raise TypeError("stream operation not supported")
        self._sock = sock
        _vb.call("tls_wrap", hostname, sock._id, ctx.verify_mode, sock._t, data=ctx._ca)

    def read(self, size=-1):
        return self._sock.read(size)

    def readinto(self, buf, nbytes=-1):
        return self._sock.readinto(buf, nbytes)

    def readline(self):
        return self._sock.readline()

    def write(self, buf, off_or_len=None, length=None):
        return self._sock.write(buf, off_or_len, length)

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def ioctl(self, req, arg):
        return self._sock.ioctl(req, arg)

    def close(self):
        self._sock.close()

    def getpeercert(self, binary_form=False):
        if not binary_form:
            raise NotImplementedError()
        buf = bytearray(8192)
        n = _vb.fetch("tls_peercert", buf, "", self._sock._id)
        return bytes(buf[:n]) if n else None

    def cipher(self):
        name, _, version = _vb.query("tls_cipher", "", self._sock._id).partition(" ")
        return (name, version)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


del _vboard
