# Virtual board firmware: `ssl`, the CPython-like layer the ESP32 firmware
# freezes over `tls` (micropython-lib python-stdlib/ssl): an SSLContext whose
# verify_mode starts at CERT_NONE, load_verify_locations(cafile=, cadata=), and
# the legacy wrap_socket(sock, key=, cert=, cert_reqs=, cadata=, server_hostname=).
import tls
from tls import *  # noqa: F403  (the constants, as the board's ssl exports them)


class SSLContext:
    def __init__(self, *args):
        self._context = tls.SSLContext(*args)
        self._context.verify_mode = tls.CERT_NONE

    @property
    def verify_mode(self):
        return self._context.verify_mode

    @verify_mode.setter
    def verify_mode(self, val):
        self._context.verify_mode = val

    def load_cert_chain(self, certfile, keyfile):
        self._context.load_cert_chain(_read(certfile), _read(keyfile))

    def load_verify_locations(self, cafile=None, cadata=None):
        self._context.load_verify_locations(_read(cafile) if cafile else cadata)

    def wrap_socket(
        self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None
    ):
        return self._context.wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            server_hostname=server_hostname,
        )


def _read(name_or_data):
    if isinstance(name_or_data, str):
        with open(name_or_data, "rb") as f:
            return f.read()
    return name_or_data


def wrap_socket(
    sock,
    server_side=False,
    key=None,
    cert=None,
    cert_reqs=tls.CERT_NONE,
    cadata=None,
    server_hostname=None,
    do_handshake=True,
):
    ctx = SSLContext(tls.PROTOCOL_TLS_SERVER if server_side else tls.PROTOCOL_TLS_CLIENT)
    if cert or key:
        ctx.load_cert_chain(cert, key)
    if cadata:
        ctx.load_verify_locations(cadata=cadata)
    ctx.verify_mode = cert_reqs
    return ctx.wrap_socket(
        sock,
        server_side=server_side,
        do_handshake_on_connect=do_handshake,
        server_hostname=server_hostname,
    )
