"""Terminal settings: saving builds the terminal's cloud config, validates it
with the terminal's own validator, publishes it retained, and the page shows
pending / applied (version) / rejected (reason)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cloud.ingest import effects
from cloud.models import AlarmCondition, AuditEntry, ConfigStatus, Terminal
from cloud.ops import retention
from cloud.services import configs
from edge.config import ConfigStore
from protocol import frames
from tests.support.web import (
    SITE_A,
    csrf_token,
    login_as,
)


def rule_form(world, **changes):
    """The settings form as the page submits it, with ``changes`` applied."""
    rid = world.ids["rule_a"]
    data = {
        f"rule-{rid}-present": "1",
        f"rule-{rid}-warn": "30",
        f"rule-{rid}-alarm": "50",
        f"rule-{rid}-hysteresis": "2",
        f"rule-{rid}-on_delay_s": "60",
        f"rule-{rid}-off_delay_s": "60",
        f"rule-{rid}-count": "",
        f"rule-{rid}-window_s": "",
        f"rule-{rid}-enabled": "1",
        f"rule-{rid}-override_warn": "",
        f"rule-{rid}-override_alarm": "",
        f"rule-{rid}-override_until": "",
        "new-channel": "",
        "new-cond": "hi",
        "heartbeat": "300",
        "upload": "60",
    }
    data.update({k.replace("RID", str(rid)): v for k, v in changes.items()})
    return data


def save(client, data):
    token = csrf_token(client, "/terminals/TA1/settings")
    return client.post("/terminals/TA1/settings", data={"csrf_token": token, **data})


def published(app):
    return app.extensions["mimamori_publisher"].messages


def terminal(world):
    with world.session() as s:
        return s.get(Terminal, "TA1")


def test_saving_a_threshold_publishes_a_retained_config_and_shows_pending(app, client, world):
    login_as(client, "admin_a")
    response = save(client, rule_form(world, **{"rule-RID-warn": "25"}))
    assert response.status_code == 302
    [msg] = published(app)
    assert msg.topic == "mm/v1/TA1/down/config" and msg.retain and msg.qos == 1
    frame = frames.decode(msg.payload)
    assert frame["type"] == "config" and frame["tid"] == "TA1" and frame["version"] == 1
    [rule] = frame["config"]["thresholds"]
    assert rule == {
        "channel": "leak1.ior",
        "cond": "leak",
        "warn": 25,
        "alarm": 50,
        "hyst": 2,
        "on_delay": 60,
        "off_delay": 60,
    }
    t = terminal(world)
    assert t.config_status == ConfigStatus.PENDING and t.config_pending_version == 1
    page = client.get("/terminals/TA1/settings").get_data(as_text=True)
    assert "pending" in page and "(version 1)" in page
    with world.session() as s:
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "terminal.config.push")
        ).one()
        assert entry.details["config"] == frame["config"]
        assert entry.actor == "admin@acme.test"


def test_the_terminal_accepts_what_the_site_sends(app, client, world, tmp_path, clock):
    """The published config, fed to the terminal's own config store (edge/config.py)
    with the site file the installer wrote, is applied."""
    login_as(client, "admin_a")
    until = (clock.now + timedelta(hours=2)).astimezone(ZoneInfo("Asia/Tokyo"))
    data = rule_form(
        world,
        **{
            "rule-RID-override_warn": "40",
            "rule-RID-override_until": until.strftime("%Y-%m-%dT%H:%M"),
            "rule-RID-count": "3",
            "rule-RID-window_s": "3600",
            "new-channel": "th1.t",
            "new-cond": "hi",
            "new-warn": "35.5",
            "new-alarm": "40",
            "new-enabled": "1",
            "sampling-leak1.ior": "10",
            "heartbeat": "120",
        },
    )
    assert save(client, data).status_code == 302
    frame = frames.decode(published(app)[-1].payload)
    store = ConfigStore(str(tmp_path))
    store.save({"site": SITE_A})
    assert store.apply_cloud(frame["config"], version=frame["version"]) == (True, "applied")
    cloud = store.config["cloud"]
    assert cloud["sampling"] == {"leak1.ior": 10} and cloud["heartbeat"] == 120
    leak = next(t for t in cloud["thresholds"] if t["channel"] == "leak1.ior")
    assert leak["override"] == {
        "warn": 40,
        "alarm": None,
        "until": int(until.replace(second=0).timestamp()),
    }
    assert leak["count"] == 3 and leak["window"] == 3600
    hi = next(t for t in cloud["thresholds"] if t["channel"] == "th1.t")
    assert hi["warn"] == 35.5 and hi["cond"] == "hi"


def test_a_config_the_terminal_would_refuse_is_not_saved(app, client, world):
    login_as(client, "admin_a")
    # warn above alarm: the terminal's validator refuses it.
    response = save(client, rule_form(world, **{"rule-RID-warn": "60"}))
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "would refuse" in html and "must be &lt;= alarm" in html
    assert published(app) == []
    with world.session() as s:
        assert s.get(AlarmCondition, world.ids["rule_a"]).warn == 30.0
    assert terminal(world).config_status == ConfigStatus.NONE


def test_a_condition_that_does_not_fit_the_channel_is_refused(client, app, world):
    login_as(client, "admin_a")
    response = save(
        client, rule_form(world, **{"new-channel": "th1.t", "new-cond": "contact", "new-warn": "1"})
    )
    assert response.status_code == 400
    assert "does not apply to a temperature channel" in response.get_data(as_text=True)
    assert published(app) == []


def test_a_failed_publish_changes_nothing(app, client, world):
    login_as(client, "admin_a")
    app.extensions["mimamori_publisher"].fail = "broker down"
    response = save(client, rule_form(world, **{"rule-RID-warn": "20"}))
    assert response.status_code == 503
    with world.session() as s:
        assert s.get(AlarmCondition, world.ids["rule_a"]).warn == 30.0
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "terminal.config.push")
            )
            == 0
        )
    assert terminal(world).config_status == ConfigStatus.NONE
    # Broker back: the same save goes through as version 1.
    app.extensions["mimamori_publisher"].fail = None
    assert save(client, rule_form(world, **{"rule-RID-warn": "20"})).status_code == 302
    assert frames.decode(published(app)[-1].payload)["version"] == 1


def test_versions_increase_and_an_unchanged_save_sends_nothing(app, client, world):
    login_as(client, "admin_a")
    save(client, rule_form(world, **{"rule-RID-warn": "20"}))
    save(client, rule_form(world, **{"rule-RID-warn": "21"}))
    assert [frames.decode(m.payload)["version"] for m in published(app)] == [1, 2]
    response = save(client, rule_form(world, **{"rule-RID-warn": "21"}))
    assert response.status_code == 302
    assert len(published(app)) == 2
    assert "Nothing changed" in client.get("/terminals/TA1/settings").get_data(as_text=True)


def test_applied_and_rejected_acks_show_on_the_page(app, client, world, clock):
    login_as(client, "admin_a")
    save(client, rule_form(world, **{"rule-RID-warn": "20"}))
    with world.session() as s:  # the ingest applies the terminal's cfgack
        t = s.get(Terminal, "TA1")
        effects.cfgack(
            s, t, {"version": 1, "ok": True, "reason": None, "boot": 1, "seq": 9}, clock.now
        )
        s.commit()
    page = client.get("/terminals/TA1/settings").get_data(as_text=True)
    assert "applied" in page and "(version 1)" in page
    save(client, rule_form(world, **{"rule-RID-warn": "22"}))
    with world.session() as s:
        t = s.get(Terminal, "TA1")
        effects.cfgack(
            s,
            t,
            {"version": 2, "ok": False, "reason": "thresholds[0].warn: nope", "boot": 1, "seq": 10},
            clock.now,
        )
        s.commit()
    page = client.get("/terminals/TA1").get_data(as_text=True)
    assert "rejected" in page and "thresholds[0].warn: nope" in page


def test_the_config_in_force_outlives_the_audit_log_retention(app, client, world, clock, tmp_path):
    login_as(client, "admin_a")
    save(client, rule_form(world, heartbeat="600", upload="120", **{"rule-RID-warn": "25"}))
    # Four months on, the retention job has archived and deleted the audit log.
    clock.advance(120 * 86400)
    retention.run(
        world.engine,
        now=clock.now,
        zone=ZoneInfo("Asia/Tokyo"),
        log_dir=tmp_path / "logs",
        archive_dir=tmp_path / "archive",
        online_months=3,
        archive_months=12,
        evidence_months=13,
    )
    with world.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 0
        view = configs.current(s, s.get(Terminal, "TA1"))
        assert (view.heartbeat, view.upload, view.document_version) == (600, 120, 1)
    # The page offers what is in force, so the next edit keeps it.
    login_as(client, "admin_a")  # four months on: a new login
    page = client.get("/terminals/TA1/settings").get_data(as_text=True)
    assert 'value="600"' in page
    save(client, rule_form(world, heartbeat="600", upload="120", **{"rule-RID-warn": "26"}))
    last = frames.decode(published(app)[-1].payload)
    assert (last["version"], last["config"]["heartbeat"], last["config"]["upload"]) == (2, 600, 120)


def test_deleting_a_rule_and_form_errors(app, client, world):
    login_as(client, "admin_a")
    bad = save(client, rule_form(world, **{"rule-RID-on_delay_s": "ten"}))
    assert bad.status_code == 400 and "is not a whole number" in bad.get_data(as_text=True)
    bad = save(client, rule_form(world, **{"rule-RID-count": "3"}))
    assert bad.status_code == 400 and "count and window go together" in bad.get_data(as_text=True)
    past = save(
        client,
        rule_form(
            world, **{"rule-RID-override_warn": "40", "rule-RID-override_until": "2020-01-01T00:00"}
        ),
    )
    assert past.status_code == 400 and "must end in the future" in past.get_data(as_text=True)
    assert save(client, rule_form(world, **{"rule-RID-delete": "1"})).status_code == 302
    frame = frames.decode(published(app)[-1].payload)
    assert frame["config"]["thresholds"] == []
    with world.session() as s:
        assert s.get(AlarmCondition, world.ids["rule_a"]) is None


def test_threshold_entries_follow_the_terminal_schema():
    now = datetime(2026, 3, 10, tzinfo=UTC)
    contact = AlarmCondition(
        channel="di1.di1",
        cond="contact",
        warn=None,
        alarm=1.0,
        hysteresis=0.0,
        on_delay_s=5,
        off_delay_s=0,
        enabled=True,
    )
    entry = configs.threshold_of(contact, now)
    assert entry == {
        "channel": "di1.di1",
        "cond": "contact",
        "alarm": 1,
        "hyst": 0,
        "on_delay": 5,
        "off_delay": 0,
    }
    assert type(entry["alarm"]) is int  # the terminal refuses 1.0 for a contact
    expired = AlarmCondition(
        channel="leak1.ior",
        cond="leak",
        warn=30.0,
        alarm=50.0,
        hysteresis=0.5,
        on_delay_s=0,
        off_delay_s=0,
        enabled=True,
        override_warn=40.0,
        override_until=now - timedelta(seconds=1),
    )
    assert "override" not in configs.threshold_of(expired, now)
