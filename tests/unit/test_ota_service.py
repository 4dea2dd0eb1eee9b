"""Over-the-air updates in the cloud: upload checks, rollouts in waves, automatic
pause, progress, chunks; through the API (Flask's test client) and the
functions the ingest calls (record_status, chunk_frame, advance), with the
publisher recording what would go to the broker."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cloud.models import AuditEntry, Connectivity, Terminal, TerminalCommand
from cloud.models.ota import OtaBundleFile, OtaTarget
from cloud.services import ota
from edge.installer.signing import write_archive
from protocol import frames
from tests.support.api import bearer, issue_tokens
from tests.support.ota import OTHER, PUBLIC, make_bundle
from tests.support.web import make_app


@pytest.fixture
def app(world: Any, clock: Any) -> Any:
    return make_app(world, clock, ota_keys=(PUBLIC,))


@pytest.fixture
def call(client: Any, world: Any) -> Any:
    tokens = issue_tokens(world)

    def request(who: str, method: str, path: str, **kwargs: Any) -> Any:
        return client.open(path, method=method, headers=bearer(tokens[who]), **kwargs)

    return request


def upload(call: Any, data: bytes, who: str = "operator") -> Any:
    return call(who, "POST", "/api/v1/ota/bundles", data=data, content_type="application/x-tar")


def test_upload_checks_the_signature_files_and_size_and_only_operators_may(
    call: Any, world: Any, tmp_path: Path
) -> None:
    good = make_bundle(tmp_path / "good")
    assert upload(call, good, "admin_a").status_code == 403
    assert upload(call, good, "installer").status_code == 403
    for name, data, why in (
        ("untrusted", make_bundle(tmp_path / "u", key=OTHER), "not in MIMAMORI_OTA_KEYS"),
        ("tampered", make_bundle(tmp_path / "t", tamper=True), "does not match the manifest"),
        ("too big", make_bundle(tmp_path / "b", big=ota.MAX_BUNDLE_BYTES), "terminals stage"),
        ("no trust", make_bundle(tmp_path / "n", trust=False), "trusts no key"),
        ("not tar", b"hello" * 100, "Not a bundle archive"),
    ):
        r = upload(call, data)
        assert r.status_code == 422, (name, r.get_json())
        assert why in r.get_json()["error"]["message"], (name, r.get_json())
    # a manifest changed after signing: the signature no longer matches
    src = tmp_path / "good"
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["firmware_version"] = "6.6.6"
    (src / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    write_archive(src, manifest, tmp_path / "resigned.tar")
    r = upload(call, (tmp_path / "resigned.tar").read_bytes())
    assert r.status_code == 422 and "Bad signature" in r.get_json()["error"]["message"]
    # a path that climbs out of the bundle
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../etc/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert "bad entry" in upload(call, evil.getvalue()).get_json()["error"]["message"]
    with world.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OtaBundleFile)) == 0
    r = upload(call, good)
    assert r.status_code == 201, r.get_json()
    b = r.get_json()
    assert (b["version"], b["signed_by"], b["files"]) == ("2.0.0", PUBLIC, 4)
    assert upload(call, good).status_code == 422  # twice
    with world.session() as s:
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "ota.bundle.upload")
        ).one()
        assert entry.actor == "op@mimamori.test"


def add_terminals(world: Any, n: int) -> list[str]:
    ids = ["TW%02d" % i for i in range(n)]
    with world.session() as s:
        customer = s.get(Terminal, "TA1").customer_id
        for tid in ids:
            s.add(
                Terminal(id=tid, customer_id=customer, name=tid, connectivity=Connectivity.ONLINE)
            )
        s.commit()
    return ids


def online(world: Any, *ids: str) -> None:
    with world.session() as s:
        for tid in ids:
            s.get(Terminal, tid).connectivity = Connectivity.ONLINE
        s.commit()


def report(
    world: Any, tid: str, job: int, state: str, *, clock: Any, reason: str | None = None
) -> None:
    """What the ingest does with an otastat frame (cloud.ingest.effects.otastat)."""
    with world.session() as s:
        frame = {"job": job, "state": state, "done": 10, "total": 10, "reason": reason}
        assert ota.record_status(s, tid, frame, clock()) is not None
        s.commit()


def advance(app: Any, world: Any, clock: Any) -> list[Any]:
    publisher = app.extensions["mimamori_publisher"]
    before = len(publisher.messages)
    with world.session() as s:
        ota.advance(s, publisher, clock())
    return [frames.decode(m.payload) for m in publisher.messages[before:]]


def test_waves_offer_pause_on_failures_and_resume(
    call: Any, app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    bundle = upload(call, make_bundle(tmp_path)).get_json()["id"]
    ids = add_terminals(world, 12)
    r = call(
        "operator",
        "POST",
        "/api/v1/ota/rollouts",
        json={"bundle": bundle, "terminals": ids, "waves": "1,10%,100%", "threshold_pct": 20},
    )
    assert r.status_code == 201, r.get_json()
    rollout = r.get_json()
    assert [t["wave"] for t in rollout["targets"]] == [0] + [1] + [2] * 10
    assert rollout["counts"] == {"pending": 12}
    # the same terminals cannot be in two active rollouts
    again = call(
        "operator", "POST", "/api/v1/ota/rollouts", json={"bundle": bundle, "terminals": ids[:1]}
    )
    assert again.status_code == 422
    offers = advance(app, world, clock)
    assert [(f["tid"], f["name"]) for f in offers] == [(ids[0], "ota")]
    args = offers[0]["args"]
    assert args["bundle"] and args["size"] > 0 and args["files"] == 4
    job = args["job"]
    # a chunk for that job and terminal only
    with world.session() as s:
        req = {"job": job, "path": "edge/agent.mpy", "off": 2, "len": 100}
        chunk = frames.decode(ota.chunk_frame(s, ids[0], req, clock()) or b"")
        assert chunk["data"] == bytes(range(100)) and chunk["size"] == 2 + 256 * 12
        assert ota.chunk_frame(s, ids[1], req, clock()) is None  # another terminal's job
        assert ota.chunk_frame(s, ids[0], dict(req, path="nope"), clock()) is None
    assert advance(app, world, clock) == []  # wave 0 still running
    report(world, ids[0], job, "downloading", clock=clock)
    report(world, ids[0], job, "confirmed", clock=clock)
    report(world, ids[0], job, "downloading", clock=clock)  # late: a final state stays
    offers = advance(app, world, clock)
    assert [f["tid"] for f in offers] == [ids[1]]
    report(
        world,
        ids[1],
        offers[0]["args"]["job"],
        "rolled_back",
        clock=clock,
        reason="crashed at start",
    )
    assert advance(app, world, clock) == []
    got = call("operator", "GET", f"/api/v1/ota/rollouts/{rollout['id']}").get_json()
    assert got["state"] == "paused" and "1 of 1 failed" in got["reason"]
    assert got["counts"] == {"confirmed": 1, "rolled_back": 1, "pending": 10}
    rolled = next(t for t in got["targets"] if t["terminal_id"] == ids[1])
    assert (rolled["state"], rolled["reason"]) == ("rolled_back", "crashed at start")
    with world.session() as s:
        auto = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "ota.rollout.pause")
        ).one()
        assert auto.actor == "system"
    assert call("viewer_a", "GET", f"/api/v1/ota/rollouts/{rollout['id']}").status_code == 403
    r = call("operator", "POST", f"/api/v1/ota/rollouts/{rollout['id']}/resume")
    assert r.get_json()["state"] == "running" and r.get_json()["wave"] == 2
    assert len(advance(app, world, clock)) == 10
    with world.session() as s:
        actions = s.scalars(
            sa.select(AuditEntry.action)
            .where(AuditEntry.action.like("ota.%"))
            .order_by(AuditEntry.id)
        ).all()
    assert actions == [
        "ota.bundle.upload",
        "ota.rollout.start",
        "ota.rollout.pause",
        "ota.rollout.resume",
    ]


def test_a_silent_terminal_fails_after_the_stall_time(
    call: Any, app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    bundle = upload(call, make_bundle(tmp_path)).get_json()["id"]
    r = call(
        "operator",
        "POST",
        "/api/v1/ota/rollouts",
        json={
            "bundle": bundle,
            "terminals": ["TA1", "TB1"],
            "waves": "100%",
            "confirm_s": 60,
            "stall_s": 120,
        },
    )
    assert r.status_code == 201
    online(world, "TA1")  # TB1 is offline: an offer waits for its birth
    assert [f["tid"] for f in advance(app, world, clock)] == ["TA1"]
    clock.advance(ota.REOFFER_S + 1)
    assert [f["tid"] for f in advance(app, world, clock)] == ["TA1"]  # unanswered: again
    clock.advance(121)
    advance(app, world, clock)
    with world.session() as s:
        got = {t.terminal_id: (t.state, t.reason) for t in s.scalars(sa.select(OtaTarget))}
    assert got == {
        "TA1": ("failed", "no progress for 120 s"),
        "TB1": ("failed", "offline for 120 s"),
    }
    got = call("operator", "GET", f"/api/v1/ota/rollouts/{r.get_json()['id']}").get_json()
    assert got["state"] == "paused"  # 1 of 1 failed


def test_wave_sizes() -> None:
    assert ota.wave_of_each(1, ["1", "10%", "100%"]) == [0]
    assert ota.wave_of_each(3, ["1", "10%", "100%"]) == [0, 1, 1]  # 10 % of 3 adds nobody
    assert ota.wave_of_each(20, ["50%"]) == [0] * 10 + [1] * 10  # the rest follows
    for bad in ("", "0", "x", "150%", ",".join(["1"] * 11)):
        with pytest.raises(ota.Invalid):
            ota.parse_waves(bad)


def test_the_firmware_pages_for_operators_only(
    app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    from tests.support.web import csrf_token, login_as

    op = login_as(app.test_client(), "operator")
    page = op.get("/ota").get_data(as_text=True)
    assert "No bundles yet." in page and PUBLIC[:16] in page
    token = csrf_token(op, "/ota")
    archive = make_bundle(tmp_path)
    r = op.post(
        "/ota/bundles",
        data={"csrf_token": token, "archive": (io.BytesIO(archive), "b.tar")},
        content_type="multipart/form-data",
    )
    assert r.status_code == 302, r.get_data(as_text=True)[:500]
    bad = op.post(
        "/ota/bundles",
        data={"csrf_token": token, "archive": (io.BytesIO(b"junk"), "b.tar")},
        content_type="multipart/form-data",
    )
    assert bad.status_code == 400 and "Not a bundle archive" in bad.get_data(as_text=True)
    page = op.get("/ota").get_data(as_text=True)
    assert "2.0.0" in page and 'id="new-rollout"' in page
    with world.session() as s:
        bundle = s.scalar(sa.select(OtaBundleFile.bundle_pk))
    r = op.post(
        "/ota/rollouts",
        data={"csrf_token": token, "bundle": bundle, "terminals": "TA1, TB1", "waves": "1,100%"},
    )
    assert r.status_code == 302
    online(world, "TA1")
    advance(app, world, clock)
    page = op.get(r.headers["Location"]).get_data(as_text=True)
    assert 'http-equiv="refresh"' in page and 'data-terminal="TA1"' in page
    assert "offered" in page and "waiting for its wave" in page
    ja = op.get(r.headers["Location"], headers={"Accept-Language": "ja"})
    assert ja.status_code == 200
    admin = login_as(app.test_client(), "admin_a")
    assert admin.get("/ota").status_code == 403
    assert "/ota" not in admin.get("/").get_data(as_text=True)


def test_a_cancel_tells_the_terminals_under_way_to_stop(
    call: Any, app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    bundle = upload(call, make_bundle(tmp_path)).get_json()["id"]
    ids = add_terminals(world, 4)
    r = call(
        "operator",
        "POST",
        "/api/v1/ota/rollouts",
        json={"bundle": bundle, "terminals": ids, "waves": "3,100%"},
    )
    rollout = r.get_json()["id"]
    offers = {f["tid"]: f["args"]["job"] for f in advance(app, world, clock)}
    assert sorted(offers) == ids[:3]  # ids[3] waits for the next wave
    report(world, ids[1], offers[ids[1]], "downloading", clock=clock)
    report(world, ids[2], offers[ids[2]], "installed", clock=clock)
    publisher = app.extensions["mimamori_publisher"]
    before = len(publisher.messages)
    r = call("operator", "POST", f"/api/v1/ota/rollouts/{rollout}/cancel")
    assert r.get_json()["state"] == "cancelled"
    sent = [frames.decode(m.payload) for m in publisher.messages[before:]]
    # offered and downloading: told to stop; installed: confirms or rolls back by itself
    assert sorted((f["tid"], f["name"], f["args"]) for f in sent) == [
        (ids[0], "ota_cancel", {"job": offers[ids[0]]}),
        (ids[1], "ota_cancel", {"job": offers[ids[1]]}),
    ]
    assert all(m.topic.endswith("/down/cmd") and m.qos == 1 for m in publisher.messages[before:])
    got = call("operator", "GET", f"/api/v1/ota/rollouts/{rollout}").get_json()
    states = {t["terminal_id"]: (t["state"], t["reason"]) for t in got["targets"]}
    gone = ("failed", "cancelled by op@mimamori.test")
    assert states == {ids[0]: gone, ids[1]: gone, ids[2]: ("installed", ""), ids[3]: gone}
    with world.session() as s:
        cmds = s.scalars(
            sa.select(TerminalCommand).where(TerminalCommand.name == "ota_cancel")
        ).all()
        assert {(c.terminal_id, c.state, c.requested_by) for c in cmds} == {
            (ids[0], "delivered", "op@mimamori.test"),
            (ids[1], "delivered", "op@mimamori.test"),
        }
        # no chunk for a cancelled job, and no offer from the driver any more
        req = {"job": offers[ids[1]], "path": "edge/agent.mpy", "off": 0, "len": 100}
        assert ota.chunk_frame(s, ids[1], req, clock()) is None
    assert advance(app, world, clock) == []
    report(world, ids[2], offers[ids[2]], "confirmed", clock=clock)  # its own end
    report(world, ids[1], offers[ids[1]], "failed", clock=clock, reason="cancelled by the cloud")
    # a terminal that missed the cancel (offline) is told when it asks for a chunk
    before = len(publisher.messages)
    with world.session() as s:
        assert ota.withdrawal(s, ids[3], offers[ids[0]], publisher, clock()) is None  # not its job
        assert ota.withdrawal(s, ids[0], offers[ids[0]], publisher, clock()) is not None
    told = [frames.decode(m.payload) for m in publisher.messages[before:]]
    assert [(f["tid"], f["name"], f["args"]) for f in told] == [
        (ids[0], "ota_cancel", {"job": offers[ids[0]]})
    ]
    got = call("operator", "GET", f"/api/v1/ota/rollouts/{rollout}").get_json()
    assert got["counts"] == {"failed": 3, "confirmed": 1}
    with world.session() as s:
        actions = s.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action == "ota.rollout.cancel")
        ).all()
        assert actions == ["ota.rollout.cancel"]


def test_a_job_still_served_is_not_withdrawn(
    call: Any, app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    bundle = upload(call, make_bundle(tmp_path)).get_json()["id"]
    call("operator", "POST", "/api/v1/ota/rollouts", json={"bundle": bundle, "terminals": ["TA1"]})
    online(world, "TA1")
    job = advance(app, world, clock)[0]["args"]["job"]
    publisher = app.extensions["mimamori_publisher"]
    with world.session() as s:
        assert ota.withdrawal(s, "TA1", job, publisher, clock()) is None
        assert ota.withdrawal(s, "TA1", job + 999, publisher, clock()) is None


def test_a_second_driver_overlapping_the_first_does_nothing_twice(
    call: Any, app: Any, world: Any, clock: Any, tmp_path: Path
) -> None:
    """The ingest lets one worker drive at a time; this is the fence behind
    that lease. Driver B runs a whole pass in the middle of driver A's (while
    A publishes its first offer, and just before A writes its pause): every
    target is offered once and the automatic pause is audited once."""
    bundle = upload(call, make_bundle(tmp_path)).get_json()["id"]
    ids = add_terminals(world, 3)
    r = call(
        "operator",
        "POST",
        "/api/v1/ota/rollouts",
        json={"bundle": bundle, "terminals": ids, "waves": "100%", "threshold_pct": 20},
    )
    rollout = r.get_json()["id"]
    publisher = app.extensions["mimamori_publisher"]
    b_ran = []

    def driver_b() -> None:
        b_ran.append(True)
        with world.session() as s:
            ota.advance(s, publisher, clock())

    class Interrupted:
        def publish(self, topic: str, payload: bytes, *, retain: bool, qos: int = 1) -> None:
            publisher.publish(topic, payload, retain=retain, qos=qos)
            if not b_ran:
                driver_b()

    with world.session() as s:
        ota.advance(s, Interrupted(), clock())
    assert b_ran
    sent = [frames.decode(m.payload) for m in publisher.messages]
    with world.session() as s:
        rows = s.scalars(
            sa.select(TerminalCommand.terminal_id).where(TerminalCommand.name == "ota")
        ).all()
        jobs = {t.terminal_id: t.id for t in s.scalars(sa.select(OtaTarget))}
    assert sorted(rows) == ids
    assert sorted(f["tid"] for f in sent if f.get("name") == "ota") == ids
    for tid in ids:
        report(world, tid, jobs[tid], "failed", clock=clock, reason="refused")
    b_ran.clear()
    with world.session() as s:

        def before_pause(state: Any) -> None:
            if state.is_update and not b_ran:
                driver_b()  # A decided to pause, B pauses first

        sa.event.listen(s, "do_orm_execute", before_pause)
        ota.advance(s, publisher, clock())
    assert b_ran
    got = call("operator", "GET", f"/api/v1/ota/rollouts/{rollout}").get_json()
    assert got["state"] == "paused" and "3 of 3 failed" in got["reason"]
    with world.session() as s:
        pauses = s.scalars(
            sa.select(AuditEntry.actor).where(AuditEntry.action == "ota.rollout.pause")
        ).all()
    assert pauses == ["system"]
