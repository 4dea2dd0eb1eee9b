"""Mail text: Japanese and English templates, explicit time zones, stable Message-IDs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.notify.errors import RenderError
from cloud.notify.mail import compose, message_id
from cloud.notify.render import render, when
from cloud.notify.settings import NotifySettings

NOW = datetime(2026, 11, 27, 5, 3, tzinfo=UTC)


def payload(**kw):
    base = {
        "kind": "alarm",
        "event": "raised",
        "alarm_id": 7,
        "terminal_id": "T0001",
        "terminal_name": "第1工場 受電盤",
        "site": "東京都品川区",
        "customer": "Acme",
        "timezone": "Asia/Tokyo",
        "channel": "ior",
        "cond": "leak",
        "severity": "alarm",
        "state": "raised",
        "value": 31.2,
        "threshold": 30.0,
        "value_text": "31.2 mA",
        "threshold_text": "30.0 mA",
        "at": NOW.isoformat(),
        "raised_at": NOW.isoformat(),
        "historical": False,
    }
    return {**base, **kw}


def test_times_name_their_zone_jst_by_default():
    assert when(NOW.isoformat()) == "2026-11-27 14:03 JST"
    assert when(NOW.isoformat(), "Europe/Berlin") == "2026-11-27 06:03 CET"
    assert when(NOW.isoformat(), "UTC") == "2026-11-27 05:03 UTC"


def test_japanese_alarm_mail():
    subject, body = render(payload(), "ja")
    assert subject == "[mimamori] 【警報】発生: 第1工場 受電盤 (T0001) ior 漏洩電流 31.2 mA"
    assert "次の警報が発生しました。" in body
    assert "発生日時  : 2026-11-27 14:03 JST" in body
    assert "しきい値  : 30.0 mA" in body


def test_english_alarm_mail():
    subject, body = render(payload(), "en")
    assert subject == "[mimamori] ALARM raised: 第1工場 受電盤 (T0001) ior leakage current 31.2 mA"
    assert "Raised at : 2026-11-27 14:03 JST" in body


@pytest.mark.parametrize(
    ("event", "ja", "en"),
    [
        ("cleared", "【復旧】復旧", "RECOVERED cleared"),
        ("escalated", "【警報】警報レベルに上昇", "ALARM escalated"),
        ("acknowledged", "【警報】確認済み", "ALARM acknowledged"),
    ],
)
def test_each_event_has_its_own_subject(event, ja, en):
    extra = {"acked_by": "山田", "comment": ""} if event == "acknowledged" else {}
    assert ja in render(payload(event=event, **extra), "ja")[0]
    assert en in render(payload(event=event, **extra), "en")[0]


def test_reminders_are_counted_in_the_subject():
    assert "未確認 (再通知3回目)" in render(payload(event="reminder", reminder=3), "ja")[0]
    assert (
        "not acknowledged (reminder #3)" in render(payload(event="reminder", reminder=3), "en")[0]
    )


def test_digest_lists_every_item_with_times():
    items = [
        {
            "event": "raised",
            "alarm_id": 1,
            "channel": "ior",
            "cond": "leak",
            "severity": "warning",
            "value_text": "12.3 mA",
            "threshold_text": "10.0 mA",
            "at": NOW.isoformat(),
        },
        {
            "event": "cleared",
            "alarm_id": 1,
            "channel": "ior",
            "cond": "leak",
            "severity": "warning",
            "value_text": "2.0 mA",
            "threshold_text": "10.0 mA",
            "at": NOW.replace(minute=13).isoformat(),
        },
    ]
    p = {
        "kind": "digest",
        "terminal_id": "T0001",
        "terminal_name": "",
        "site": "",
        "customer": "Acme",
        "timezone": "Asia/Tokyo",
        "items": items,
        "omitted": 0,
    }
    subject, body = render(p, "ja")
    assert subject == "[mimamori] 過去の警報のまとめ (2件): T0001"
    assert "2026-11-27 14:03 JST  発生  【注意】 ior 漏洩電流 12.3 mA" in body
    assert "2026-11-27 14:13 JST  復旧" in body
    assert "2 past alarm event(s)" in render(p, "en")[0]


def test_unknown_kind_language_or_missing_field_is_a_render_error():
    with pytest.raises(RenderError):
        render({"kind": "nope"}, "ja")
    with pytest.raises(RenderError):
        render(payload(), "fr")
    broken = payload()
    del broken["raised_at"]
    with pytest.raises(RenderError):
        render(broken, "ja")


def test_compose_headers_and_stable_message_id():
    settings = NotifySettings(
        mail_from="alerts@mimamori.example",
        message_id_domain="mimamori.example",
        site_url="https://mimamori.example/",
    )
    msg = compose(
        dedup_key="alarm:7:raised:3",
        recipient="boss@example.com",
        payload=payload(),
        language="ja",
        settings=settings,
        now=NOW,
    )
    again = compose(
        dedup_key="alarm:7:raised:3",
        recipient="boss@example.com",
        payload=payload(),
        language="ja",
        settings=settings,
        now=NOW.replace(hour=9),
    )
    assert (
        msg["Message-ID"]
        == again["Message-ID"]
        == message_id("alarm:7:raised:3", "mimamori.example")
    )
    assert msg["Message-ID"] != message_id("alarm:7:raised:4", "mimamori.example")
    assert msg["To"] == "boss@example.com" and msg["From"] == "alerts@mimamori.example"
    assert msg["Date"] == "Fri, 27 Nov 2026 14:03:00 +0900"
    assert msg["References"] == "<alarm-7-T0001@mimamori.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert "https://mimamori.example/alarms/7" in msg.get_content()
    # The subject survives MIME encoding intact.
    assert str(msg["Subject"]).startswith("[mimamori] 【警報】発生")


@pytest.mark.parametrize("language", ["ja", "en"])
def test_service_notices_render_with_their_windows(language):
    # The payloads cloud.ops.announcements queues (maintenance, failure, recovery).
    common = {"customer": "Acme", "timezone": "Asia/Tokyo", "language": language}
    later = NOW.replace(hour=7).isoformat()
    maint = {
        **common,
        "kind": "maintenance",
        "title": "DB upgrade",
        "body": "短時間です",
        "starts_at": NOW.isoformat(),
        "ends_at": later,
        "components": ["web", "ingest"],
    }
    subject, body = render(maint, language)
    assert "DB upgrade" in subject
    assert "2026-11-27 14:03 JST" in body and "2026-11-27 16:03 JST" in body
    assert "web, ingest" in body and "短時間です" in body
    fail = {**common, "kind": "failure", "component": "broker", "since": NOW.isoformat()}
    subject, body = render(fail, language)
    assert "broker" in subject and "2026-11-27 14:03 JST" in body
    back = {**fail, "kind": "recovery", "until": later}
    subject, body = render(back, language)
    assert "broker" in subject and "2026-11-27 16:03 JST" in body
