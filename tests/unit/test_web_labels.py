"""Channel labels: the customer admin names channels and contact states, and
every place a person reads a channel uses the names: pages, CSV, the API."""

from __future__ import annotations

import sqlalchemy as sa

from cloud.models import AuditEntry, ChannelLabel, ChannelSpec, apply_birth
from cloud.timeseries import Point
from tests.support.api import bearer, issue_tokens
from tests.support.web import CHANNELS_A, T0, login_as, post_form

pytest_plugins = ["tests.support.web_fixtures"]  # app, client, clock, world

CONTACT = ChannelSpec(10, "di.di3", "", "contact", 0)


def with_contact(world):
    """TA1 gains a contact input closed (1) a minute ago."""
    with world.session() as s:
        apply_birth(s, "TA1", [*CHANNELS_A, CONTACT], boot=2, at=T0)
        s.commit()
    world.store.write([Point("TA1", "di.di3", int(T0.timestamp()) - 60, 1)])


def save(client, data):
    fields = {"channel": list(data)}
    for channel, (name, off, on, key) in data.items():
        fields[f"name:{channel}"] = name
        fields[f"off:{channel}"] = off
        fields[f"on:{channel}"] = on
        if key:
            fields[f"key:{channel}"] = "1"
    return post_form(client, "/terminals/TA1/labels", data=fields)


def test_admin_names_channels_and_states_and_every_page_uses_them(client, world):
    with_contact(world)
    login_as(client, "admin_a")
    r = save(
        client,
        {
            "leak1.ior": ("  絶縁 Ior\t(盤1) ", "", "", True),
            "di.di3": ("受電遮断器", "切", "入", True),
        },
    )
    assert r.status_code == 302
    with world.session() as s:
        rows = {r.channel: r for r in s.scalars(sa.select(ChannelLabel))}
        assert rows["leak1.ior"].display_name == "絶縁 Ior (盤1)"  # one line, spaces folded
        assert (rows["di.di3"].state_off, rows["di.di3"].state_on) == ("切", "入")
        entry = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "terminal.labels")).one()
        assert set(entry.details["labels"]) == {"leak1.ior", "di.di3"}
    terminal = client.get("/terminals/TA1").get_data(as_text=True)
    live = terminal[terminal.index('id="live"') :]
    assert '<th scope="row">受電遮断器 <span class="small">di.di3</span></th>' in live
    assert '<span class="v">入</span>' in live  # the state's name, not 1
    assert 'data-off="切" data-on="入"' in live  # for the live refresh
    # The graph's channel list names them; the key channels are on the graph at first.
    assert 'value="leak1.ior" checked> 絶縁 Ior (盤1) <span class="unit">[mA]</span>' in terminal
    assert 'value="di.di3" checked> 受電遮断器</label>' in terminal
    assert 'value="pm1.kw" > pm1.kw' in terminal
    alarms = client.get("/alarms").get_data(as_text=True)
    assert "絶縁 Ior (盤1)" in alarms
    alarm = client.get(f"/alarms/{world.ids['alarm_a']}").get_data(as_text=True)
    assert "絶縁 Ior (盤1)" in alarm and "leak1.ior" in alarm
    assert "絶縁 Ior (盤1) · " in client.get("/terminals/TA1/settings").get_data(as_text=True)
    dashboard = client.get("/").get_data(as_text=True)
    assert "受電遮断器 <b>入</b>" in dashboard
    csv = client.get(
        "/terminals/TA1/export.csv?start=2026-03-10&end=2026-03-10&channel=leak1.ior&channel=di.di3"
    ).get_data(as_text=True)
    header, *lines = csv.lstrip("\ufeff").splitlines()
    assert header == '"time (JST, UTC+09:00)",絶縁 Ior (盤1) (leak1.ior) [mA],受電遮断器 (di.di3)'
    assert lines[-1].endswith(",入")


def test_unnamed_contacts_read_on_and_off(client, world):
    with_contact(world)
    login_as(client, "viewer_a")
    live = client.get("/terminals/TA1").get_data(as_text=True)
    assert (
        '<tr data-channel="di.di3" data-off="off" data-on="on"><th scope="row">di.di3</th>' in live
    )
    assert '<span class="v">on</span>' in live


def test_bad_labels_are_refused_and_nothing_is_saved(client, world):
    with_contact(world)
    login_as(client, "admin_a")
    cases = [
        ({"leak1.ior": ("x" * 101, "", "", False)}, "longer than 100 characters"),
        ({"leak1.ior": ("Ior", "off", "on", False)}, "is not a contact input"),
        ({"nope.x": ("?", "", "", False)}, "is not a channel of this terminal"),
        ({c.name: (c.name, "", "", True) for c in CHANNELS_A[:7]}, "At most 6 key channels"),
    ]
    for data, message in cases:
        r = save(client, data)
        assert r.status_code == 400 and message in r.get_data(as_text=True), message
    with world.session() as s:
        assert s.scalars(sa.select(ChannelLabel)).all() == []


def test_viewers_read_the_names_but_cannot_change_them(app, client, world):
    login_as(client, "viewer_a")
    page = client.get("/terminals/TA1/labels").get_data(as_text=True)
    assert "<fieldset disabled>" in page and 'type="submit"' not in page.split("<main>")[1]
    assert save(client, {"leak1.ior": ("mine", "", "", False)}).status_code == 403
    stranger = login_as(app.test_client(), "admin_b")
    assert stranger.get("/terminals/TA1/labels").status_code == 404


def test_the_api_reads_and_sets_labels(client, world):
    with_contact(world)
    tokens = issue_tokens(world)
    r = client.put(
        "/api/v1/terminals/TA1/labels",
        json={
            "labels": [
                {"channel": "di.di3", "display_name": "遮断器", "state_on": "入", "key": True}
            ]
        },
        headers=bearer(tokens["admin_a"]),
    )
    assert r.status_code == 200, r.get_json()
    (di3,) = [c for c in r.get_json()["items"] if c["name"] == "di.di3"]
    assert di3 == {
        "alias": 10,
        "name": "di.di3",
        "unit": "",
        "kind": "contact",
        "display_name": "遮断器",
        "state_off": "",
        "state_on": "入",
        "key": True,
    }
    listed = client.get("/api/v1/terminals/TA1/channels", headers=bearer(tokens["viewer_a"]))
    ior = next(c for c in listed.get_json()["items"] if c["name"] == "leak1.ior")
    assert ior["display_name"] == "" and ior["state_on"] is None and ior["key"] is False
    bad = client.put(
        "/api/v1/terminals/TA1/labels",
        json={"labels": [{"channel": "leak1.ior", "state_on": "入"}]},
        headers=bearer(tokens["admin_a"]),
    )
    assert bad.status_code == 422
    denied = client.put(
        "/api/v1/terminals/TA1/labels", json={"labels": []}, headers=bearer(tokens["viewer_a"])
    )
    assert denied.status_code == 403
    client.put(
        "/api/v1/terminals/TA1/labels",
        json={"labels": [{"channel": "leak1.ior", "display_name": "絶縁"}]},
        headers=bearer(tokens["admin_a"]),
    )
    alarm = client.get(f"/api/v1/alarms/{world.ids['alarm_a']}", headers=bearer(tokens["admin_a"]))
    assert alarm.get_json()["channel_label"] == "絶縁"
