"""Parked frames as operators see and handle them: the API and the terminal's
admin page, through Flask's test client, on the parking store the ingest
fills (:mod:`cloud.services.parking`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloud.models import AuditEntry, ParkedFrame
from cloud.services import parking
from tests.support import ingest as S
from tests.support.api import bearer, issue_tokens
from tests.support.web import T0, login_as, post_form


@pytest.fixture
def parked(world: Any) -> None:
    """TA1: three frames from before its contract, one waiting for its birth."""
    frames = [S.birth("TA1", 1, 0), *(S.data("TA1", 1, k, S.T0 + 60 * k, [[k]]) for k in (1, 2))]
    parcels = [
        parking.Parcel("TA1", f["boot"], f["seq"], f"mm/v1/TA1/up/{f['type']}", b"x", T0, r)
        for f, r in zip(frames, [parking.NOT_CONTRACTED] * 3, strict=True)
    ]
    parcels.append(
        parking.Parcel(
            "TA1", 2, 5, "mm/v1/TA1/up/data", b"y", T0 + timedelta(minutes=5), "no_birth"
        )
    )
    with world.session() as s:
        assert parking.park(s, parcels, at=T0) == 4
        s.commit()


def rows(world: Any) -> list[tuple[int, str, bool]]:
    with world.session() as s:
        return [
            (r.seq, r.reason, r.release_requested_at is not None)
            for r in s.scalars(sa.select(ParkedFrame).order_by(ParkedFrame.seq))
        ]


def audit(world: Any) -> list[tuple[str, str, dict[str, Any]]]:
    with world.session() as s:
        return [
            (e.action, e.actor, e.details)
            for e in s.scalars(
                sa.select(AuditEntry).where(AuditEntry.action.like("terminal.parked.%"))
            )
        ]


def test_api_lists_releases_and_discards_with_an_audit_trail(
    client: Any, world: Any, parked: None
) -> None:
    tokens = issue_tokens(world)
    op = bearer(tokens["operator"])
    r = client.get("/api/v1/terminals/TA1/parked", headers=op)
    assert r.status_code == 200
    assert [(g["reason"], g["count"], g["release_requested"]) for g in r.get_json()["items"]] == [
        ("no_birth", 1, 0),
        ("not_contracted", 3, 0),
    ]
    assert [
        g["terminal_id"] for g in client.get("/api/v1/parked", headers=op).get_json()["items"]
    ] == [
        "TA1",
        "TA1",
    ]
    r = client.post(
        "/api/v1/terminals/TA1/parked/release", json={"reason": "not_contracted"}, headers=op
    )
    assert r.status_code == 200 and r.get_json() == {"frames": 3}
    assert rows(world) == [
        (0, "not_contracted", True),
        (1, "not_contracted", True),
        (2, "not_contracted", True),
        (5, "no_birth", False),
    ]
    r = client.post("/api/v1/terminals/TA1/parked/discard", headers=op)
    assert r.status_code == 200 and r.get_json() == {"frames": 4}
    assert rows(world) == []
    (release, discard) = audit(world)
    assert release[0:2] == ("terminal.parked.release", "op@mimamori.test")
    assert release[2]["frames"] == 3 and release[2]["reason"] == "not_contracted"
    assert discard[0] == "terminal.parked.discard" and discard[2]["frames"] == 4
    r = client.post("/api/v1/terminals/TA1/parked/release", json={"reason": "bogus"}, headers=op)
    assert r.status_code == 422


@pytest.mark.parametrize(
    "case",
    [
        ("installer", "TA1", 403),
        ("admin_a", "TA1", 403),
        ("viewer_a", "TA1", 403),
        ("operator", "NOPE", 404),
    ],
)
def test_only_operators_see_or_touch_parked_frames(
    client: Any, world: Any, parked: None, case: tuple[str, str, int]
) -> None:
    who, tid, status = case
    headers = bearer(issue_tokens(world)[who])
    assert client.get(f"/api/v1/terminals/{tid}/parked", headers=headers).status_code == status
    r = client.post(f"/api/v1/terminals/{tid}/parked/discard", headers=headers)
    assert r.status_code == status
    assert len(rows(world)) == 4


def test_admin_page_shows_counts_and_releases_by_reason(
    client: Any, world: Any, parked: None
) -> None:
    login_as(client, "operator")
    page = client.get("/admin/terminals/TA1").get_data(as_text=True)
    assert 'data-reason="not_contracted"' in page and 'data-reason="no_birth"' in page
    listing = client.get("/admin/terminals").get_data(as_text=True)
    assert '/admin/terminals/TA1#parked">4<' in listing
    r = post_form(
        client,
        "/admin/terminals/TA1",
        "/admin/terminals/TA1/parked",
        data={"action": "release", "reason": "no_birth"},
    )
    assert r.status_code == 302
    assert rows(world)[-1] == (5, "no_birth", True)
    assert [a[0] for a in audit(world)] == ["terminal.parked.release"]


def test_installers_do_not_see_the_parked_card(client: Any, world: Any, parked: None) -> None:
    login_as(client, "installer")
    page = client.get("/admin/terminals/TA1").get_data(as_text=True)
    assert 'id="parked"' not in page
