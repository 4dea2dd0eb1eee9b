"""HTTP webhooks: signed POSTs to customers' servers.

Signature (forwarding endpoints and alarm webhook targets each have a
shared secret)::

    X-Mimamori-Timestamp: 1764201600
    X-Mimamori-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The timestamp is inside the signed bytes, so a receiver that rejects
timestamps older than a few minutes (:func:`verify` does, 300 s by default)
cannot be fed a recorded request again later. ``X-Mimamori-Delivery`` is the
same on every attempt of one ledger row: deliveries are at least once, and a
receiver dedupes on it.

Status handling: 2xx delivered; 408, 425, 429 and 5xx transient (retried);
any other status, redirects included, permanent (dead-lettered: a wrong URL
or a refused signature does not heal by itself). Connection errors and
timeouts are transient. Every POST has a total deadline (:mod:`cloud.notify.netio`).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cloud.notify import netio
from cloud.notify.errors import PermanentDeliveryError, TransientDeliveryError, UnreachableError
from cloud.notify.netguard import Refused
from cloud.notify.netio import Deadline, Guard

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mimamori-Signature"
TIMESTAMP_HEADER = "X-Mimamori-Timestamp"
DELIVERY_HEADER = "X-Mimamori-Delivery"
EVENT_HEADER = "X-Mimamori-Event"
USER_AGENT = "mimamori-webhook/1"
SENML_CONTENT_TYPE = "application/senml+json"
_RETRY_STATUS = frozenset({408, 425, 429})


def senml_body(records: list[dict[str, Any]]) -> bytes:
    """The exact bytes of a forwarded SenML pack, sent and signed (compact JSON, UTF-8)."""
    return json.dumps(records, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """``sha256=<hex>`` over ``b"<timestamp>." + body`` with ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    tolerance_s: int = 300,
) -> bool:
    """What a receiver runs: True only for a valid signature on a fresh timestamp.

    Compares in constant time; never raises for malformed headers.
    """
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, ts), signature)


class _HTTPConnection(http.client.HTTPConnection):
    """Dials through :func:`netio.open_connection`: deadline and address guard."""

    def __init__(self, host: str, port: int | None, deadline: Deadline, guard: Guard | None):
        super().__init__(host, port, timeout=deadline.seconds)
        self._deadline, self._guard = deadline, guard

    def connect(self) -> None:
        self.sock = netio.open_connection(self.host, self.port, self._deadline, self._guard)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, deadline: Deadline, guard: Guard | None):
        self._tls = netio.tls_context()
        super().__init__(host, port, timeout=deadline.seconds, context=self._tls)
        self._deadline, self._guard = deadline, guard

    def connect(self) -> None:
        raw = netio.open_connection(self.host, self.port, self._deadline, self._guard)
        self.sock = netio.wrap_tls(self._tls, raw, self.host)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout_s: float,
    *,
    guard: Guard | None = None,
) -> int:
    """POST ``body``; return the 2xx status.

    ``timeout_s`` is a total deadline: resolving, connecting, sending and
    reading the answer all end by it, however slowly the server trickles.
    ``guard`` checks the resolved addresses before dialling (SSRF). Redirects
    are not followed (a redirected POST would lose its body).

    Raises :class:`TransientDeliveryError` or :class:`PermanentDeliveryError`
    (see the module docstring); the exception text carries the status.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentDeliveryError("not an http(s) URL")
    deadline = Deadline(timeout_s)
    kind = _HTTPSConnection if parts.scheme == "https" else _HTTPConnection
    try:
        conn = kind(parts.hostname, parts.port, deadline, guard)
    except ValueError as err:  # a port http.client cannot use
        raise PermanentDeliveryError("not a usable URL") from err
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers={"User-Agent": USER_AGENT, **headers})
        response = conn.getresponse()
        status = int(response.status)
        response.read(65536)  # drain a little; the connection is closed anyway
    except (OSError, http.client.HTTPException) as err:
        # The customer sees the error text: say what kind of failure it was,
        # never which address, port or system error (that maps networks).
        # The details go to the log for the operator.
        log.info("POST %s: %s: %s", url, type(err).__name__, err)
        raise UnreachableError(_customer_text(err, timeout_s)) from err
    finally:
        conn.close()
    if 200 <= status < 300:
        return status
    if status >= 500 or status in _RETRY_STATUS:
        raise TransientDeliveryError(f"HTTP {status}", status)
    raise PermanentDeliveryError(f"HTTP {status}", status)


def _customer_text(err: BaseException, timeout_s: float) -> str:
    if isinstance(err, socket.gaierror):
        return Refused().args[0]  # as for a refused address: nothing to tell apart
    if isinstance(err, TimeoutError):
        return f"no complete answer within {timeout_s:g} s"
    if isinstance(err, ssl.SSLError | ssl.CertificateError):
        return "TLS handshake failed"
    if isinstance(err, http.client.HTTPException):
        return "not a valid HTTP answer"
    if isinstance(err, ConnectionError) and not isinstance(err, ConnectionRefusedError):
        return "connection lost"
    return "could not connect"


def status_of(err: BaseException) -> int | None:
    """The HTTP status a delivery error carries (None: no answer)."""
    args: tuple[object, ...] = tuple(err.args)
    status = args[1] if len(args) > 1 else None
    return status if isinstance(status, int) else None
