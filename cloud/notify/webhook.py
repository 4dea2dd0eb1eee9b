"""HTTP webhooks: signed POSTs to customers' servers.

Signature (forwarding endpoints, which have a shared secret)::

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
timeouts are transient.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from cloud.notify.errors import PermanentDeliveryError, TransientDeliveryError, UnreachableError

SIGNATURE_HEADER = "X-Mimamori-Signature"
TIMESTAMP_HEADER = "X-Mimamori-Timestamp"
DELIVERY_HEADER = "X-Mimamori-Delivery"
EVENT_HEADER = "X-Mimamori-Event"
USER_AGENT = "mimamori-webhook/1"
_RETRY_STATUS = frozenset({408, 425, 429})


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> int:
    """POST ``body``; return the 2xx status.

    Raises :class:`TransientDeliveryError` or :class:`PermanentDeliveryError`
    (see the module docstring); the exception text carries the status.
    """
    if not url.startswith(("http://", "https://")):
        raise PermanentDeliveryError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310
    request.add_header("User-Agent", USER_AGENT)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(65536)  # drain so the connection can close cleanly
            return int(response.status)
    except urllib.error.HTTPError as err:
        status = int(err.code)
        err.close()
        if status >= 500 or status in _RETRY_STATUS:
            raise TransientDeliveryError(f"HTTP {status}", status) from err
        raise PermanentDeliveryError(f"HTTP {status}", status) from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UnreachableError(f"POST {url}: {reason}") from err
    except ValueError as err:  # a URL urllib cannot use at all
        raise PermanentDeliveryError(f"POST {url}: {err}") from err


def status_of(err: BaseException) -> int | None:
    """The HTTP status a delivery error carries (None: no answer)."""
    args: tuple[object, ...] = tuple(err.args)
    status = args[1] if len(args) > 1 else None
    return status if isinstance(status, int) else None
