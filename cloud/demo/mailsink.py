"""A built-in SMTP sink for the demo: every message it receives is kept as a file.

    python -m cloud.demo.mailsink --dir build/demo/mail [--host 127.0.0.1] [--port 0]

It accepts any sender and recipient (no authentication, no relaying: it
never sends anything on) and writes each message to ``<dir>/<stamp>-<n>.eml``
exactly as received, with ``X-Sink-Mail-From``, ``X-Sink-Rcpt-To`` and
``X-Sink-Received`` headers in front. Files are written to a temporary name
and renamed, so a reader never sees half a message. Bind it to loopback only.

Once listening it prints ``smtp HOST:PORT`` and ``ready`` on stdout; SIGINT
or SIGTERM stop it (exit 0). A port that cannot be opened exits 2.

The file layout, and its reader that the operator area of the web site
calls to show the sink's mail, are :mod:`cloud.services.mailsink`.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud.demo.procs import free_port, serve_until_signalled
from cloud.services.mailsink import SUFFIX

# A message larger than this is refused (552); alarm mail is a few KB.
MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class _Store:
    """Writes messages into one directory; numbered so names never collide."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def save(self, mail_from: str, rcpt_to: Sequence[str], content: bytes) -> Path:
        now = datetime.now(UTC)
        with self._lock:
            n = next(self._counter)
        name = f"{now:%Y%m%dT%H%M%S%f}-{os.getpid()}-{n:06d}{SUFFIX}"
        head = (
            f"X-Sink-Mail-From: {mail_from}\r\n"
            f"X-Sink-Rcpt-To: {', '.join(rcpt_to)}\r\n"
            f"X-Sink-Received: {now.isoformat()}\r\n"
        ).encode("utf-8", "replace")
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(head + content)
        target = self.directory / name
        os.replace(tmp, target)
        return target


class _Handler:
    """aiosmtpd handler: accept every recipient, store the DATA."""

    def __init__(self, store: _Store) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "replace")
        self.store.save(envelope.mail_from or "", list(envelope.rcpt_tos), content)
        return "250 Message accepted for delivery"


class MailSink:
    """The SMTP server on a thread (aiosmtpd ``Controller``).

    ``start()`` binds ``host:port`` (0 picks a free port; :attr:`port` tells
    which) and returns once it accepts connections; raises ``OSError`` when
    the port cannot be bound. ``stop()`` closes it.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory
        self.host = host
        self.port = port
        self._controller: Any = None

    def start(self) -> MailSink:
        from aiosmtpd.controller import Controller  # noqa: PLC0415

        # aiosmtpd cannot bind port 0 itself: pick a free port, and pick again
        # if another program took it before the bind.
        attempts = 3 if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self.port or free_port(self.host)
            controller = Controller(
                _Handler(_Store(self.directory)),
                hostname=self.host,
                port=port,
                data_size_limit=MAX_MESSAGE_BYTES,
                decode_data=False,  # store the bytes as they came
            )
            try:
                controller.start()
            except (OSError, RuntimeError) as err:  # aiosmtpd wraps some bind errors
                if attempt == attempts:
                    raise OSError(
                        f"SMTP sink could not listen on {self.host}:{port}: {err}"
                    ) from err
                continue
            self._controller, self.port = controller, port
            break
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cloud.demo.mailsink",
        description="SMTP sink: store every received message as a file.",
    )
    p.add_argument("--dir", type=Path, required=True, help="where messages are stored")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    args = p.parse_args(argv)
    sink = MailSink(args.dir, args.host, args.port)
    return serve_until_signalled(
        sink, f"the SMTP sink on {args.host}:{args.port}", lambda: f"smtp {sink.host}:{sink.port}"
    )


if __name__ == "__main__":
    sys.exit(main())
