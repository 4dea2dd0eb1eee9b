"""Mail kept by the demo's SMTP sink (:mod:`cloud.demo.mailsink`), as the
operator area of the web site lists it (``/admin/mail``).

The sink writes each message to ``<dir>/<stamp>-<pid>-<n>.eml`` exactly as
received, with ``X-Sink-Mail-From``, ``X-Sink-Rcpt-To`` and
``X-Sink-Received`` headers in front; the directory is
``$MIMAMORI_MAILSINK_DIR`` (:func:`sink_dir`), unset on a production site.
"""

from __future__ import annotations

import email
import email.policy
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

MAILSINK_DIR_ENV = "MIMAMORI_MAILSINK_DIR"
SUFFIX = ".eml"


@dataclass(frozen=True)
class SinkMessage:
    """One received message as the operator area lists it."""

    name: str  # file name, stable: usable as an id in a URL
    received_at: datetime  # UTC, when the sink stored it
    mail_from: str
    rcpt_to: tuple[str, ...]
    subject: str
    text: str  # the text/plain body (or "" when there is none)
    size: int


def sink_dir(env: dict[str, str] | None = None) -> Path | None:
    """The sink directory the web site should show (``$MIMAMORI_MAILSINK_DIR``),
    or None when this site has no sink (production)."""
    value = (os.environ if env is None else env).get(MAILSINK_DIR_ENV, "")
    return Path(value) if value else None


def read_message(path: Path) -> SinkMessage:
    """Parse one stored file. Raises ``OSError`` if it cannot be read."""
    raw = path.read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    received = msg.get("X-Sink-Received", "")
    try:
        at = datetime.fromisoformat(str(received))
    except ValueError:
        at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    rcpt = tuple(r.strip() for r in str(msg.get("X-Sink-Rcpt-To", "")).split(",") if r.strip())
    body = msg.get_body(preferencelist=("plain",))
    text = ""
    if body is not None:
        try:
            text = str(body.get_content())
        except (LookupError, ValueError):  # unknown charset, broken encoding
            text = body.get_payload(decode=True).decode("utf-8", "replace")  # type: ignore[union-attr]
    return SinkMessage(
        name=path.name,
        received_at=at,
        mail_from=str(msg.get("X-Sink-Mail-From", "")),
        rcpt_to=rcpt,
        subject=str(msg.get("Subject", "")),
        text=text,
        size=len(raw),
    )


def list_messages(directory: Path, limit: int = 100) -> list[SinkMessage]:
    """The newest ``limit`` messages in ``directory``, newest first.

    A missing directory is an empty sink. A file that vanishes or cannot be
    parsed while listing is skipped (the sink only ever adds files, but an
    operator may clear the directory).
    """
    try:
        names = sorted(
            (
                p
                for p in directory.iterdir()
                if p.name.endswith(SUFFIX) and not p.name.startswith(".")
            ),
            key=lambda p: p.name,
            reverse=True,
        )
    except FileNotFoundError:
        return []
    out: list[SinkMessage] = []
    for path in names[:limit]:
        try:
            out.append(read_message(path))
        except (OSError, ValueError):
            continue
    return out
