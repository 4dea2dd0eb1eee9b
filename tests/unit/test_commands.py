"""Remote commands through the API and the terminal page (Flask's test client),
with the publisher recording what would go to the broker and the terminal's
answer applied by the function the ingest calls for a ``cmdres`` frame."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloud.models import AuditEntry, TerminalCommand
from cloud.ops import jobs
from cloud.ops.settings import OpsSettings
from cloud.services import commands
from protocol import frames
from tests.support.api import bearer, issue_tokens
from tests.support.ops import context
from tests.support.web import login_as, post_form


@pytest.fixture
def call(client: Any, world: Any) -> Any:
    tokens = issue_tokens(world)

    def request(who: str, method: str, path: str, **kwargs: Any) -> Any:
        return client.open(path, method=method, headers=bearer(tokens[who]), **kwargs)

    return request


def answer(world: Any, command_id: int, ok: bool, result: Any, clock: Any) -> None:
    """What the ingest does with the terminal's cmdres (cloud.ingest.effects.cmdres)."""
    with world.session() as s:
        assert commands.record_result(s, "TA1", command_id, ok=ok, result=result, at=clock())
        s.commit()


def test_a_command_is_published_then_delivered_then_answered(
    call: Any, app: Any, world: Any, clock: Any
) -> None:
    r = call("admin_a", "POST", "/api/v1/terminals/TA1/commands", json={"name": "sample_now"})
    assert r.status_code == 201, r.get_json()
    cmd = r.get_json()
    assert (cmd["name"], cmd["state"], cmd["requested_by"]) == (
        "sample_now",
        "delivered",
        "admin@acme.test",
    )
    assert r.headers["Location"].endswith(f"/api/v1/terminals/TA1/commands/{cmd['id']}")
    sent = app.extensions["mimamori_publisher"].messages[-1]
    assert (sent.topic, sent.retain, sent.qos) == ("mm/v1/TA1/down/cmd", False, 1)
    frame = frames.decode(sent.payload)
    assert (frame["type"], frame["id"], frame["name"], frame["args"]) == (
        "cmd",
        cmd["id"],
        "sample_now",
        {},
    )
    answer(world, cmd["id"], True, {"channels": 10}, clock)
    got = call("viewer_a", "GET", f"/api/v1/terminals/TA1/commands/{cmd['id']}").get_json()
    assert (got["state"], got["ok"], got["result"]) == ("succeeded", True, {"channels": 10})
    listed = call("viewer_a", "GET", "/api/v1/terminals/TA1/commands").get_json()["items"]
    assert [c["id"] for c in listed] == [cmd["id"]]
    with world.session() as s:
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "terminal.cmd.send")
        ).one()
        assert entry.details == {"id": cmd["id"], "name": "sample_now", "args": {}}


def test_unanswered_commands_time_out_and_a_late_answer_still_counts(
    call: Any, world: Any, clock: Any
) -> None:
    cmd = call(
        "operator", "POST", "/api/v1/terminals/TA1/commands", json={"name": "reboot"}
    ).get_json()
    clock.advance(commands.TIMEOUT_S)
    path = f"/api/v1/terminals/TA1/commands/{cmd['id']}"
    assert call("operator", "GET", path).get_json()["state"] == "timed_out"
    answer(world, cmd["id"], False, "unknown command", clock)
    assert call("operator", "GET", path).get_json()["state"] == "failed"


def test_a_broker_that_does_not_take_it_makes_a_failed_command(call: Any, app: Any) -> None:
    app.extensions["mimamori_publisher"].fail = "connection refused"
    r = call("operator", "POST", "/api/v1/terminals/TA1/commands", json={"name": "rebirth"})
    assert r.status_code == 201
    assert r.get_json()["state"] == "failed"
    assert "connection refused" in r.get_json()["error"]


@pytest.mark.parametrize(
    "case",
    [
        ("admin_a", "TA1", {"name": "reboot"}, 403),  # customers ask support for a reboot
        ("viewer_a", "TA1", {"name": "sample_now"}, 403),
        ("admin_b", "TA1", {"name": "sample_now"}, 404),  # another customer's terminal
        ("installer", "TA1", {"name": "reboot"}, 201),
        ("operator", "TA1", {"name": "format_flash"}, 422),
        ("operator", "TA1", {"name": "sample_now", "args": {"x": 1}}, 422),
        ("operator", "TA1", {"name": "resync_clock", "args": {"time": -5}}, 422),
        ("operator", "TA1", {"name": "resync_clock", "args": {"time": 1764201600}}, 201),
        ("operator", "TA1", {"name": 7}, 400),
    ],
)
def test_who_may_send_what(
    call: Any, world: Any, case: tuple[str, str, dict[str, Any], int]
) -> None:
    who, tid, body, status = case
    r = call(who, "POST", f"/api/v1/terminals/{tid}/commands", json=body)
    assert r.status_code == status, r.get_json()
    with world.session() as s:
        sent = s.scalar(
            sa.select(sa.func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "terminal.cmd.send")
        )
    assert sent == (1 if status == 201 else 0)


def test_terminal_page_offers_the_roles_commands_and_shows_their_state(
    client: Any, app: Any, world: Any, clock: Any
) -> None:
    login_as(client, "admin_a")
    page = client.get("/terminals/TA1").get_data(as_text=True)
    for name in ("sample_now", "rebirth", "resync_clock"):
        assert f'data-command="{name}"' in page
    assert 'data-command="reboot"' not in page
    r = post_form(client, "/terminals/TA1", "/terminals/TA1/commands", data={"name": "sample_now"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/terminals/TA1#commands")
    fragment = client.get("/terminals/TA1/commands").get_data(as_text=True)
    assert 'data-state="delivered"' in fragment and 'data-pending="1"' in fragment
    with world.session() as s:
        cmd_id = s.scalar(sa.select(sa.func.max(TerminalCommand.id)))
    answer(world, cmd_id, True, {"channels": 10}, clock)
    fragment = client.get("/terminals/TA1/commands").get_data(as_text=True)
    assert 'data-state="succeeded"' in fragment and "data-pending" not in fragment


def test_viewers_see_commands_but_no_buttons(client: Any) -> None:
    login_as(client, "viewer_a")
    page = client.get("/terminals/TA1").get_data(as_text=True)
    assert 'id="commands"' in page and "data-command=" not in page


def test_the_scheduler_job_stores_timed_out_and_a_late_answer_still_counts(
    call: Any, world: Any, clock: Any
) -> None:
    sent = [
        call("operator", "POST", "/api/v1/terminals/TA1/commands", json={"name": n}).get_json()
        for n in ("sample_now", "rebirth")
    ]
    answer(world, sent[1]["id"], True, None, clock)  # answered: never timed out
    ctx = context(world.engine, OpsSettings(), clock() + timedelta(seconds=commands.TIMEOUT_S - 1))
    assert jobs.command_timeouts(ctx) == "commands timed out: 0"
    ctx = context(world.engine, OpsSettings(), clock() + timedelta(seconds=commands.TIMEOUT_S))
    assert jobs.command_timeouts(ctx) == "commands timed out: 1"
    assert "command_timeouts" in {j.name for j in jobs.default_jobs(OpsSettings())}
    with world.session() as s:
        stored = dict(s.execute(sa.select(TerminalCommand.id, TerminalCommand.state)).all())
    assert stored == {sent[0]["id"]: "timed_out", sent[1]["id"]: "succeeded"}
    answer(world, sent[0]["id"], True, {"channels": 3}, clock)
    path = f"/api/v1/terminals/TA1/commands/{sent[0]['id']}"
    assert call("operator", "GET", path).get_json()["state"] == "succeeded"
