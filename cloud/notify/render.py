"""Turn a ledger row's payload into a mail subject and body, in Japanese or English.

Templates live in ``cloud/notify/templates/<kind>.<language>.txt`` (Jinja2,
plain text). The first line of a template is ``Subject: ...``, then a blank
line, then the body. Times are printed in the customer's zone with the zone
named, e.g. ``2026-11-27 14:03 JST``, never as bare wall-clock times.

Rendering is pure: payload in, text out. A payload this version cannot
render raises :class:`cloud.notify.errors.RenderError`.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from cloud.notify.errors import RenderError

TEMPLATES = Path(__file__).resolve().parent / "templates"
KINDS = ("alarm", "digest", "test", "maintenance", "failure", "recovery", "report")
LANGUAGES = ("ja", "en")
DEFAULT_ZONE = "Asia/Tokyo"

COND_LABELS = {
    "ja": {
        "hi": "上限超過",
        "lo": "下限割れ",
        "leak": "漏洩電流",
        "contact": "接点",
        "unreach": "センサ無応答",
        "unreachable": "センサ無応答",
        "stale": "値の停滞",
        "clock": "時刻未同期",
        "offline": "端末オフライン",
        "demand": "デマンド超過予測",
    },
    "en": {
        "hi": "high limit",
        "lo": "low limit",
        "leak": "leakage current",
        "contact": "contact",
        "unreach": "sensor unreachable",
        "unreachable": "sensor unreachable",
        "stale": "stale value",
        "clock": "clock unsynchronised",
        "offline": "terminal offline",
        "demand": "demand over contract (predicted)",
    },
}
SEVERITY_LABELS = {
    "ja": {"warning": "注意", "alarm": "警報"},
    "en": {"warning": "WARNING", "alarm": "ALARM"},
}
EVENT_LABELS = {
    "ja": {
        "raised": "発生",
        "escalated": "警報レベルに上昇",
        "deescalated": "注意レベルに低下",
        "acknowledged": "確認済み",
        "cleared": "復旧",
        "reminder": "再通知",
    },
    "en": {
        "raised": "raised",
        "escalated": "escalated",
        "deescalated": "de-escalated",
        "acknowledged": "acknowledged",
        "cleared": "cleared",
        "reminder": "reminder",
    },
}


def when(iso: str | None, zone: str = DEFAULT_ZONE) -> str:
    """``"2026-11-27 14:03 JST"``: an ISO timestamp in ``zone``, zone named."""
    if not iso:
        return ""
    try:
        at = datetime.fromisoformat(iso)
        tz = ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError) as err:
        raise RenderError(f"bad time {iso!r} or zone {zone!r}") from err
    if at.tzinfo is None:
        raise RenderError(f"naive time {iso!r} in payload")
    local = at.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or zone}"


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a missing field is a bug, not a blank
        autoescape=False,  # plain text mail: nothing to escape  # noqa: S701
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def render(
    payload: dict[str, Any], language: str | None = None, site_url: str = ""
) -> tuple[str, str]:
    """(subject, body) for ``payload`` in ``language`` (default: the payload's);
    ``site_url`` adds links to the web site.

    Raises :class:`RenderError` for an unknown kind or language, or a payload
    that lacks what its template needs.
    """
    kind = payload.get("kind")
    lang = language or payload.get("language") or "ja"
    if kind not in KINDS or lang not in LANGUAGES:
        raise RenderError(f"no template for kind {kind!r} in language {lang!r}")
    zone = str(payload.get("timezone") or DEFAULT_ZONE)
    context = {
        **payload,
        "cond_label": _cond_label(lang, payload.get("cond")),
        "severity_label": SEVERITY_LABELS[lang].get(str(payload.get("severity")), ""),
        "event_label": EVENT_LABELS[lang].get(str(payload.get("event")), ""),
        "terminal_label": _terminal_label(payload),
        "channel_text": channel_text(payload),
        "channel_of": channel_text,
        "labels": {
            "cond": COND_LABELS[lang],
            "severity": SEVERITY_LABELS[lang],
            "event": EVENT_LABELS[lang],
        },
        "when": lambda iso: when(iso, zone),
        "site_url": site_url.rstrip("/"),
    }
    try:
        text = _environment().get_template(f"{kind}.{lang}.txt").render(context)
    except jinja2.TemplateError as err:
        raise RenderError(f"rendering {kind}.{lang}: {err}") from err
    head, sep, body = text.partition("\n\n")
    if not sep or not head.startswith("Subject: "):
        raise RenderError(f"template {kind}.{lang} must start with 'Subject: ' and a blank line")
    return " ".join(head[len("Subject: ") :].split()), body


def _cond_label(lang: str, cond: Any) -> str:
    return COND_LABELS[lang].get(str(cond), str(cond or ""))


def channel_text(item: dict[str, Any]) -> str:
    """``受電遮断器 (di.di3)``: the customer's name of the channel and its wire
    name; the wire name alone when unlabelled ("" for no channel)."""
    channel = str(item.get("channel") or "")
    label = str(item.get("channel_label") or "")
    return f"{label} ({channel})" if label and channel and label != channel else channel


def _terminal_label(payload: dict[str, Any]) -> str:
    tid = str(payload.get("terminal_id") or "")
    name = str(payload.get("terminal_name") or "")
    return f"{name} ({tid})" if name and name != tid else tid
