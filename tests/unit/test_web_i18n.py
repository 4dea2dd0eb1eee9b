"""Japanese and English, chosen per user; the catalog is complete and compiled."""

from __future__ import annotations

import io
import re
from pathlib import Path

import sqlalchemy as sa
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

import cloud.web
from cloud.models import AuditEntry, User
from tests.support.web import (
    csrf_token,
    login_as,
    post_form,
)

WEB = Path(cloud.web.__file__).resolve().parent
CLOUD = WEB.parent
PO = WEB / "translations" / "ja" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def test_anonymous_visitors_get_their_browsers_language_and_can_switch(app):
    c = app.test_client()
    assert "ログイン" in c.get("/login", headers={"Accept-Language": "ja"}).get_data(as_text=True)
    english = c.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "Log in" in english.get_data(as_text=True) and 'lang="en"' in english.get_data(
        as_text=True
    )
    # No preference: the site default (Japanese).
    assert 'lang="ja"' in c.get("/login").get_data(as_text=True)
    token = csrf_token(c, "/login")
    c.post(
        "/language",
        data={"csrf_token": token, "lang": "ja", "next": "/login"},
        headers={"Accept-Language": "en"},
    )
    assert "パスワードをお忘れですか" in c.get(
        "/login", headers={"Accept-Language": "en"}
    ).get_data(as_text=True)


def test_each_user_sees_their_own_language(app, client, world):
    with world.session() as s:
        s.get(User, world.ids["admin_a"]).language = "ja"
        s.commit()
    ja = login_as(app.test_client(), "admin_a")
    en = login_as(app.test_client(), "viewer_a")
    page_ja = ja.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    page_en = en.get("/", headers={"Accept-Language": "ja"}).get_data(as_text=True)
    assert "ダッシュボード" in page_ja and "データ取得率" in page_ja and "注意" in page_ja
    assert "Dashboard" in page_en and "Data completeness" in page_en
    # Service errors are translated too.
    bad = post_form(
        ja, "/targets", data={"channel": "email", "address": "x@acme.test", "min_severity": "fatal"}
    )
    assert "不明な重要度です" in bad.get_data(as_text=True)


def test_switching_language_is_saved_on_the_user_and_audited(client, world):
    login_as(client, "viewer_a")
    response = post_form(
        client, "/alarms", "/language", data={"lang": "ja", "next": "/alarms?state=open"}
    )
    assert response.headers["Location"] == "/alarms?state=open"
    assert "警報" in client.get("/alarms").get_data(as_text=True)
    with world.session() as s:
        assert s.get(User, world.ids["viewer_a"]).language == "ja"
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "user.language")).one()
        assert entry.details == {"language": "ja"}
    # Unknown languages are ignored.
    post_form(client, "/alarms", "/language", data={"lang": "xx"})
    with world.session() as s:
        assert s.get(User, world.ids["viewer_a"]).language == "ja"


def catalog():
    with PO.open("rb") as fh:
        return read_po(fh)


def extracted_ids():
    # the same patterns as translations/babel.cfg: the site and the services it shows errors of
    method_map = [
        ("web/**.py", "python"),
        ("services/**.py", "python"),
        ("web/templates/**.html", "jinja2"),
    ]
    keywords = {
        "_": None,
        "gettext": None,
        "ngettext": (1, 2),
        "_l": None,
        "N_": None,
        "lazy_gettext": None,
    }
    return {
        msg
        for _file, _line, msg, _comments, _ctx in extract_from_dir(
            str(CLOUD), method_map=method_map, keywords=keywords
        )
        if isinstance(msg, str)
    }


def test_every_message_has_a_japanese_translation():
    cat = catalog()
    translated = {m.id: m.string for m in cat if m.id}
    missing = sorted(i for i in extracted_ids() if not translated.get(i))
    assert missing == [], f"untranslated: {missing[:10]} (see translations/README.md)"


def test_translations_keep_their_placeholders():
    for m in catalog():
        if m.id and m.string:
            assert sorted(re.findall(r"%\(\w+\)s", m.id)) == sorted(
                re.findall(r"%\(\w+\)s", m.string)
            ), m.id


def test_compiled_catalog_matches_the_po_file():
    buf = io.BytesIO()
    write_mo(buf, catalog())
    assert MO.read_bytes() == buf.getvalue(), "run pybabel compile (translations/README.md)"
