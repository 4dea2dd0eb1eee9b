"""InfluxDB v1 HTTP API: line protocol, InfluxQL quoting and a small client.

Only the v1-compatible endpoints are used (``/ping``, ``/write``, ``/query``),
which InfluxDB 1.x serves natively and 2.x/3.x through their compatibility
APIs. Stdlib only: one keep-alive ``http.client`` connection per thread.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from cloud.errors import TimeseriesError

# -- line protocol -------------------------------------------------------------


def escape_tag(value: str) -> str:
    """Escape a tag key or value (or measurement) for line protocol."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def format_float(value: float) -> str:
    # repr is the shortest string that round-trips; always has "." or "e"
    # except for integral floats like 2.0, which repr also writes with ".0".
    return repr(float(value))


# -- InfluxQL ------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """Double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_str(value: str) -> str:
    """Single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- HTTP client ---------------------------------------------------------------


class InfluxClient:
    """Minimal v1 API client. Methods raise :class:`TimeseriesError` for network
    failures, HTTP errors and error results, with Influx's own message."""

    def __init__(
        self, url: str, username: str = "", password: str = "", timeout: float = 10.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TimeseriesError(f"bad InfluxDB URL {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 8086)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        if username:
            token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
            self.headers["Authorization"] = "Basic " + token
        self._local = threading.local()

    def ping(self) -> bool:
        """True if the server answers ``/ping`` with 204."""
        try:
            status, _ = self._request("GET", "/ping", {}, None, {})
        except TimeseriesError:
            return False
        return status == 204

    def write(self, database: str, lines: list[str]) -> None:
        """POST line protocol (second precision) to ``database``."""
        self.send_write(database, lines)()

    def send_write(self, database: str, lines: list[str]) -> Callable[[], None]:
        """Send a :meth:`write` and return at once; calling the returned
        function waits for the answer and raises as :meth:`write` does.

        The server stores while the caller works on. Until that function is
        called, this thread must not use the client again (the answer is
        still on the connection); call it exactly once, also when abandoning
        the write.
        """
        body = ("\n".join(lines) + "\n").encode("utf-8")
        answer = self._send(
            "POST",
            "/write",
            {"db": database, "precision": "s"},
            body,
            {"Content-Type": "text/plain; charset=utf-8"},
        )

        def finish() -> None:
            status, data = answer()
            if status != 204:
                raise TimeseriesError(f"InfluxDB write: HTTP {status}: {_error_text(data)}")

        return finish

    def query(self, database: str, statements: list[str]) -> list[dict[str, Any]]:
        """Run ``;``-joined statements (POST, so INTO/DELETE/CREATE work);
        return one result dict per statement, timestamps as epoch seconds."""
        q = ";\n".join(statements)
        body = urlencode({"q": q}).encode("ascii")
        status, data = self._request(
            "POST",
            "/query",
            {"db": database, "epoch": "s"},
            body,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        if status != 200:
            raise TimeseriesError(f"InfluxDB query: HTTP {status}: {_error_text(data)}")
        try:
            doc = json.loads(data)
        except ValueError as err:
            raise TimeseriesError(f"InfluxDB query: not JSON: {data[:200]!r}") from err
        if "error" in doc:
            raise TimeseriesError(f"InfluxDB query: {doc['error']}")
        results: list[dict[str, Any]] = doc.get("results", [])
        for res in results:
            if "error" in res:
                raise TimeseriesError(f"InfluxDB query: {res['error']} (in: {q[:300]})")
        if len(results) != len(statements):
            raise TimeseriesError(f"InfluxDB answered {len(results)} of {len(statements)}")
        return results

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        return self._send(method, path, params, body, headers)()

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: bytes | None,
        headers: dict[str, str],
    ) -> Callable[[], tuple[int, bytes]]:
        """Send a request; return the function that reads its answer.

        One retry on a fresh connection: the server may have closed an idle
        keep-alive socket, which shows when sending or when reading the
        answer. Every request here may be repeated (writes are idempotent).
        The returned function raises :class:`TimeseriesError` when the second
        attempt fails too.
        """
        target = self.prefix + path + ("?" + urlencode(params) if params else "")
        all_headers = {**self.headers, **headers}

        def send() -> http.client.HTTPConnection:
            conn = self._connection()
            conn.request(method, target, body=body, headers=all_headers)
            return conn

        def answer(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
            resp = conn.getresponse()
            return resp.status, resp.read()

        first: http.client.HTTPConnection | None = None
        try:
            first = send()
        except (OSError, http.client.HTTPException):
            self.close()

        def finish() -> tuple[int, bytes]:
            if first is not None:
                try:
                    return answer(first)
                except (OSError, http.client.HTTPException):
                    self.close()
            try:
                return answer(send())
            except (OSError, http.client.HTTPException) as err:
                self.close()
                raise TimeseriesError(
                    f"InfluxDB at {self.host}:{self.port} unreachable: {err}"
                ) from err

        return finish


def _error_text(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return data[:300].decode("utf-8", "replace")
    return str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)
