"""The sensors a terminal's birth names, and the mark on maps that are not
published ones: ingest keeps them, the terminal page, the installer's page and
the API show them (docs/sensors.md; protocol/README.md, the birth's devices)."""

from __future__ import annotations

import re
from typing import Any

from cloud.models import Terminal, User
from tests.support.api import bearer, issue_tokens
from tests.support.web import login_as

DEVICES = [
    {"name": "leak1", "model": "IM-100", "status": "reference"},
    {"name": "pm1", "model": "SDM120", "status": "documented"},
]


def _row(html: str, device: str) -> str:
    m = re.search(r'<tr data-device="%s".*?</tr>' % re.escape(device), html, re.S)
    assert m, device
    return m.group(0)


def _set(world: Any, tid: str, devices: list[dict[str, str]] | None) -> None:
    with world.session() as s:
        s.get(Terminal, tid).devices = devices
        s.commit()


def test_terminal_page_marks_reference_and_test_profiles_not_documented_ones(client, world):
    _set(world, "TA1", [*DEVICES, {"name": "th1", "model": "TH-10", "status": "test"}])
    html = login_as(client, "viewer_a").get("/terminals/TA1").get_data(as_text=True)
    leak = _row(html, "leak1")
    assert "IM-100" in leak and 'data-profile-status="reference"' in leak
    assert ">reference profile</a>" in leak and 'href="#profile-kinds"' in leak
    assert "not a manufacturer&#39;s published map" in leak  # the tooltip
    assert "leak1.io, leak1.ior, leak1.v" in leak  # its channels
    pm = _row(html, "pm1")
    assert "SDM120" in pm and "badge" not in pm  # documented: no mark
    assert ">test device</a>" in _row(html, "th1")
    # the explanation on the page itself (tooltips do not exist on phones)
    kinds = html[html.index('id="profile-kinds"') :]
    assert "Reference profile: its register map" in kinds and "Test device:" in kinds
    assert "Site profile" not in kinds  # only the statuses shown are explained


def test_japanese_page_says_sankou_profile(client, world):
    with world.session() as s:
        s.get(User, world.ids["viewer_a"]).language = "ja"
        s.commit()
    html = login_as(client, "viewer_a").get("/terminals/TA1").get_data(as_text=True)
    assert ">参考プロファイル</a>" in _row(html, "leak1")
    assert ">テスト機器</a>" in _row(html, "pm1")  # the world's PM-300 is a test device
    assert "メーカーが公開したものではありません" in html


def test_unknown_and_site_statuses_are_marked_and_silence_is_said(client, world):
    _set(world, "TA1", [{"name": "x1", "model": "XY-9", "status": "unverified"},
                        {"name": "x2", "model": "XY-X100", "status": "site"}])  # fmt: skip
    c = login_as(client, "viewer_a")
    html = c.get("/terminals/TA1").get_data(as_text=True)
    assert 'data-profile-status="unverified"' in _row(html, "x1")
    assert "not marked as a published map" in html
    assert ">site profile</a>" in _row(html, "x2")
    _set(world, "TA1", None)
    html = c.get("/terminals/TA1").get_data(as_text=True)
    assert "has not said which sensor profiles it uses" in html
    _set(world, "TA1", [])
    assert "No sensors are wired" in c.get("/terminals/TA1").get_data(as_text=True)


def test_installer_page_and_api_carry_the_marks(app, client, world):
    html = login_as(client, "installer").get("/admin/terminals/TA1").get_data(as_text=True)
    assert ">reference profile</a>" in _row(html, "leak1")
    assert ">test device</a>" in _row(html, "pm1")
    token = issue_tokens(world)["viewer_a"]
    body = app.test_client().get("/api/v1/terminals/TA1", headers=bearer(token)).get_json()
    assert body["sensors"][0] == {
        "name": "leak1",
        "model": "IM-100",
        "status": "reference",
        "documented": False,
    }
    assert [s["model"] for s in body["sensors"]] == ["IM-100", "PM-300", "TH-10"]
