"""A real HTTP server on a free loopback port that records the POSTs it gets.

    with WebhookReceiver(statuses=[500, 200]) as hook:
        ... POST to hook.url ...
        hook.wait_for(2)
        hook.requests[1].body

``statuses`` scripts the answers: the n-th request gets the n-th status,
later ones the last status (default 200). ``verify_with`` makes the receiver
itself check each request's HMAC signature and timestamp the way a
customer's server would (hashlib/hmac only, independent of the code under
test), answering 401 to a bad one.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_SKEW_S = 300


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    signature_ok: bool | None  # None when the receiver was not asked to verify


def check_signature(secret: str, body: bytes, headers: dict[str, str], now: float) -> bool:
    """A receiver's check, written from the documentation, not from the sender's code."""
    ts = headers.get("x-mimamori-timestamp", "")
    sig = headers.get("x-mimamori-signature", "")
    if not ts.isdigit() or abs(now - int(ts)) > MAX_SKEW_S:
        return False
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest("sha256=" + expected, sig)


class WebhookReceiver:
    def __init__(self, statuses: list[int] | None = None, verify_with: str | None = None) -> None:
        self.statuses = list(statuses or [200])
        self.verify_with = verify_with
        self._requests: list[Request] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    @property
    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._requests)

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._answer(self, headers, body)

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(self._requests)} requests, expected {count}")
                self._cond.wait(left)
            return list(self._requests)

    def _answer(
        self, handler: BaseHTTPRequestHandler, headers: dict[str, str], body: bytes
    ) -> None:
        with self._cond:
            n = len(self._requests)
            status = self.statuses[min(n, len(self.statuses) - 1)]
            ok = None
            if self.verify_with is not None:
                ok = check_signature(self.verify_with, body, headers, time.time())
                if not ok:
                    status = 401
            self._requests.append(Request(handler.path, headers, body, status, ok))
            self._cond.notify_all()
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
