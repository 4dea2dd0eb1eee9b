"""A chat receiver for the demo: an ntfy-shaped server that keeps every message.

    python -m cloud.demo.chatsink --dir build/demo/chat [--host 127.0.0.1] [--port 0]

The demo's chat target is the Apprise address ``ntfy://127.0.0.1:<port>/<topic>``:
Apprise's ntfy plugin POSTs ``{"topic", "title", "message", ...}`` as JSON
to the server's root, as it does to a real ntfy server (ntfy's publish API,
https://docs.ntfy.sh/publish/#publish-as-json). This receiver answers as
ntfy does (200 with the message's id) and keeps each message as
``<dir>/<stamp>-<pid>-<n>.json`` (``received_at``, ``path``, ``topic``,
``title``, ``message``; the body as text when it is not JSON), written to a
temporary name and renamed, so a reader never sees half a message.
``GET /`` shows the messages, newest first, as a page; ``GET /messages.json``
the same as JSON (:func:`list_messages`). Nothing is sent on. Bind it to
loopback only: it accepts anyone's message.

Once listening it prints ``chat http://HOST:PORT/`` and ``ready`` on stdout,
then one ``message <topic>: <title>`` line per message; SIGINT or SIGTERM
stop it (exit 0). A port that cannot be opened exits 2.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloud.demo.procs import serve_until_signalled

# Chat messages are a title and a few lines; anything bigger is refused (413).
MAX_BODY = 256 * 1024
SUFFIX = ".json"


def list_messages(directory: Path, limit: int = 200) -> list[dict[str, Any]]:
    """The kept messages, newest first (at most ``limit``); [] if none yet."""
    try:
        names = sorted((p for p in directory.iterdir() if p.suffix == SUFFIX), reverse=True)
    except FileNotFoundError:
        return []
    out = []
    for path in names[:limit]:
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # removed meanwhile, or not ours
    return out


class _Store:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def save(self, path: str, body: bytes) -> dict[str, Any]:
        now = datetime.now(UTC)
        with self._lock:
            n = next(self._counter)
        try:
            posted = json.loads(body)
        except ValueError:
            posted = None
        if not isinstance(posted, dict):
            posted = {"message": body.decode("utf-8", "replace")}
        record = {
            "id": f"{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{n:06d}",
            "received_at": now.isoformat(),
            "path": path,
            "topic": str(posted.get("topic") or path.strip("/")),
            "title": str(posted.get("title") or ""),
            "message": str(posted.get("message") or ""),
        }
        tmp = self.directory / f".{record['id']}.tmp"
        tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.directory / f"{record['id']}{SUFFIX}")
        return record


class ChatSink:
    """The HTTP server on a thread. ``start()`` binds ``host:port`` (0: a
    free port, :attr:`port` says which) and returns once it listens; raises
    ``OSError`` when it cannot bind. ``stop()`` closes it."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self.on_message: Any = None  # called with each stored record (the CLI logs it)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> ChatSink:
        store, sink = _Store(self.directory), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= MAX_BODY:
                    self._reply(413, "text/plain", b"too large\n")
                    return
                record = store.save(self.path, self.rfile.read(length))
                if sink.on_message is not None:
                    sink.on_message(record)
                # What ntfy answers to a publish; Apprise reads the status.
                answer = {"id": record["id"], "event": "message", "topic": record["topic"]}
                self._reply(200, "application/json", json.dumps(answer).encode())

            do_PUT = do_POST

            def do_GET(self) -> None:
                messages = list_messages(sink.directory)
                if self.path == "/messages.json":
                    body = json.dumps(messages, ensure_ascii=False).encode()
                    self._reply(200, "application/json", body)
                elif self.path == "/":
                    self._reply(200, "text/html; charset=utf-8", _page(messages).encode())
                else:
                    self._reply(404, "text/plain", b"not found\n")

            def _reply(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # one line per message is enough
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
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

    def __enter__(self) -> ChatSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _page(messages: list[dict[str, Any]]) -> str:
    rows = "".join(
        "<article><p><time>{}</time> <b>{}</b></p><h2>{}</h2><pre>{}</pre></article>".format(
            *(html.escape(m[k]) for k in ("received_at", "topic", "title", "message"))
        )
        for m in messages
    )
    return (
        '<!doctype html><html lang="ja"><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>mimamori demo: chat</title>"
        "<style>body{font-family:sans-serif;margin:1em;max-width:60em}"
        "pre{white-space:pre-wrap}article{border-bottom:1px solid #ccc}</style>"
        f"<h1>Chat messages ({len(messages)})</h1>{rows or '<p>none yet</p>'}</html>"
    )


# -- command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cloud.demo.chatsink",
        description="ntfy-shaped chat receiver: keep every message as a file.",
    )
    p.add_argument("--dir", type=Path, required=True, help="where messages are stored")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    args = p.parse_args(argv)
    sink = ChatSink(args.dir, args.host, args.port)
    sink.on_message = lambda m: print(f"message {m['topic']}: {m['title']}", flush=True)
    return serve_until_signalled(
        sink, f"the chat receiver on {args.host}:{args.port}", lambda: f"chat {sink.url}"
    )


if __name__ == "__main__":
    sys.exit(main())
