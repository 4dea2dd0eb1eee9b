"""The project's log files: JSON lines, one file per kind, role and day.

``configure_logging("web", "instance/logs")`` makes a role write

- ``web-activity.2026-03-14.jsonl``: everything at INFO and above;
- ``web-error.2026-03-14.jsonl``: WARNING and above;
- ``web-security.2026-03-14.jsonl``: records of the ``mimamori.security``
  logger (logins, lock-outs, permission refusals), whatever their level;

each line ``{"ts": ISO UTC, "level", "logger", "msg", "role", "pid"[, "exc"]}``.
The date in the name is the local date in the operations zone. Files are
opened in append mode and never renamed, so several processes of one role
can share them and no rotation can race; :mod:`cloud.ops.retention` moves
old days into the monthly archive.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

SECURITY_LOGGER = "mimamori.security"
FILE_RE = re.compile(r"^(?P<stem>[A-Za-z0-9_-]+)\.(?P<day>\d{4}-\d{2}-\d{2})\.jsonl$")


def file_name(stem: str, day: date) -> str:
    return f"{stem}.{day.isoformat()}.jsonl"


def parse_name(name: str) -> tuple[str, date] | None:
    """(stem, day) of a log file name this module writes, else None."""
    m = FILE_RE.match(name)
    if m is None:
        return None
    try:
        return m["stem"], date.fromisoformat(m["day"])
    except ValueError:
        return None


class JsonLinesFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "role": self.role,
            "pid": record.process,
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class DailyFileHandler(logging.Handler):
    """Appends formatted records to ``<dir>/<stem>.<local date>.jsonl``,
    switching files when the local date changes."""

    def __init__(
        self, directory: Path | str, stem: str, zone: ZoneInfo, level: int = logging.NOTSET
    ) -> None:
        super().__init__(level)
        self.directory = Path(directory)
        self.stem = stem
        self.zone = zone
        self._day: date | None = None
        self._stream: IO[str] | None = None
        self._io_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            day = datetime.fromtimestamp(record.created, self.zone).date()
            with self._io_lock:
                if day != self._day or self._stream is None:
                    self._open(day)
                assert self._stream is not None
                self._stream.write(line)
                self._stream.flush()
        except Exception:  # logging must never take the process down
            self.handleError(record)

    def _open(self, day: date) -> None:
        if self._stream is not None:
            self._stream.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        # O_APPEND: writes of several processes interleave by whole lines.
        self._stream = open(self.directory / file_name(self.stem, day), "a", encoding="utf-8")
        self._day = day

    def close(self) -> None:
        with self._io_lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        super().close()


class _OnlySecurity(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == SECURITY_LOGGER or record.name.startswith(SECURITY_LOGGER + ".")


def configure_logging(
    role: str,
    log_dir: Path | str,
    *,
    zone: ZoneInfo,
    level: int = logging.INFO,
    stderr: bool = True,
) -> list[logging.Handler]:
    """Attach the three file handlers (and a stderr one) to the root logger.
    Returns the handlers added, so tests and tools can remove them again."""
    formatter = JsonLinesFormatter(role)
    handlers: list[logging.Handler] = [
        DailyFileHandler(log_dir, f"{role}-activity", zone, logging.INFO),
        DailyFileHandler(log_dir, f"{role}-error", zone, logging.WARNING),
        DailyFileHandler(log_dir, f"{role}-security", zone, logging.NOTSET),
    ]
    handlers[2].addFilter(_OnlySecurity())
    for handler in handlers:
        handler.setFormatter(formatter)
    if stderr:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(console)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    # Security records are kept whatever the root level says.
    logging.getLogger(SECURITY_LOGGER).setLevel(logging.DEBUG)
    return handlers
