"""JSON-lines log files per kind, role and local day; archives."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from cloud.ops import retention
from cloud.ops.logfiles import SECURITY_LOGGER, configure_logging, parse_name

JST = ZoneInfo("Asia/Tokyo")


def test_roles_write_activity_error_and_security_files(tmp_path):
    handlers = configure_logging("web", tmp_path, zone=JST, stderr=False)
    try:
        logging.getLogger("mimamori.web").info("画面表示 %s", "T0001")
        logging.getLogger("mimamori.web").error("failed", exc_info=ValueError("x"))
        logging.getLogger(SECURITY_LOGGER).info("login alice@example.com")
        logging.getLogger("mimamori.web").debug("not kept")
    finally:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
    today = datetime.now(JST).date().isoformat()
    files = {
        p.name: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
        for p in tmp_path.iterdir()
    }
    assert set(files) == {f"web-{k}.{today}.jsonl" for k in ("activity", "error", "security")}
    activity = files[f"web-activity.{today}.jsonl"]
    assert [r["msg"] for r in activity] == ["画面表示 T0001", "failed", "login alice@example.com"]
    [error] = files[f"web-error.{today}.jsonl"]
    assert error["level"] == "ERROR" and "ValueError: x" in error["exc"]
    [security] = files[f"web-security.{today}.jsonl"]
    assert security["logger"] == SECURITY_LOGGER and security["role"] == "web"
    assert datetime.fromisoformat(security["ts"]).tzinfo is not None


def test_the_day_in_the_name_is_the_local_day(tmp_path):
    from cloud.ops.logfiles import DailyFileHandler, JsonLinesFormatter

    handler = DailyFileHandler(tmp_path, "ingest-activity", JST)
    handler.setFormatter(JsonLinesFormatter("ingest"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "late", None, None)
    record.created = datetime(2026, 3, 14, 15, 30, tzinfo=UTC).timestamp()  # 00:30 JST on the 15th
    handler.emit(record)
    handler.close()
    assert [p.name for p in tmp_path.iterdir()] == ["ingest-activity.2026-03-15.jsonl"]


def test_names():
    assert parse_name("web-activity.2026-03-15.jsonl") == ("web-activity", date(2026, 3, 15))
    assert parse_name("web-activity.2026-02-30.jsonl") is None
    assert parse_name("notes.txt") is None


def test_archives_grow_by_whole_gzip_members(tmp_path):
    path = tmp_path / "a" / "2026-03.jsonl.gz"
    assert retention.append_archive(path, ['{"id": 1}', '{"id": 2}']) == 2
    assert retention.append_archive(path, ['{"id": 3}']) == 1
    assert [r["id"] for r in retention.read_archive(path)] == [1, 2, 3]
    assert not list(path.parent.glob("*.tmp"))
