"""Graph data with what a graph draws besides the values (levels, alarms,
late samples, names), the alarm page's values with their units, and dates
typed the way the page shows them."""

from __future__ import annotations

from datetime import timedelta

from cloud.models import Alarm, AlarmState, ChannelLabel, Severity, User
from cloud.timeseries import Point
from tests.support.web import T0, login_as

pytest_plugins = ["tests.support.web_fixtures"]  # app, client, clock, world

END = int(T0.timestamp())


def test_graph_data_has_levels_alarms_late_samples_and_the_display_name(client, world):
    with world.session() as s:
        s.add(ChannelLabel(terminal_id="TA1", channel="leak1.ior", display_name="絶縁 Ior"))
        s.add(
            Alarm(
                terminal_id="TA1",
                channel="leak1.ior",
                cond="leak",
                severity=Severity.ALARM,
                state=AlarmState.CLEARED,
                raised_at=T0 - timedelta(hours=30),
                cleared_at=T0 - timedelta(hours=29),
                value=51.0,
                threshold=50.0,
            )
        )
        s.commit()
    world.store.write([Point("TA1", "leak1.ior", END - 600, 12.0, historical=True)])
    login_as(client, "viewer_a")
    day = client.get(
        f"/terminals/TA1/series.json?channel=leak1.ior&start={END - 86400}&end={END}&points=2000"
    ).get_json()
    assert day["label"] == "絶縁 Ior" and day["unit"] == "mA"
    assert day["levels"] == [
        {"cond": "leak", "severity": "warning", "value": 30.0},
        {"cond": "leak", "severity": "alarm", "value": 50.0},
    ]
    # The open warning of the world is in the day; yesterday's cleared alarm is not.
    assert [(a["severity"], a["cleared"]) for a in day["alarms"]] == [("warning", None)]
    assert day["late"] == [END - 600]
    base = "/terminals/TA1/series.json?channel=leak1.ior&points=2000"
    two = client.get(f"{base}&start={END - 2 * 86400}&end={END}").get_json()
    assert [(a["severity"], a["cleared"]) for a in two["alarms"]] == [
        ("alarm", END - 29 * 3600),
        ("warning", None),
    ]
    assert two["raw"] is False and two["late"] == []  # buckets do not tell


def test_alarm_page_gives_every_value_its_unit(client, world):
    login_as(client, "viewer_a")
    html = client.get(f"/alarms/{world.ids['alarm_a']}").get_data(as_text=True)
    assert '<dd id="alarm-value">31.5 mA</dd>' in html
    assert '<dd id="alarm-threshold">30.0 mA</dd>' in html
    assert "WARNING 30.0 mA" in html and "ALARM 50.0 mA" in html
    # The graph covers an hour before the alarm (raised an hour ago) until now.
    assert f'data-start="{END - 2 * 3600}" data-end="{END}"' in html
    assert f'data-focus="{world.ids["alarm_a"]}"' in html


def test_dates_are_typed_as_shown_in_either_language(client, world):
    login_as(client, "viewer_a")
    page = client.get("/terminals/TA1").get_data(as_text=True)
    assert 'name="start" value="2026-03-09"' in page and 'placeholder="YYYY-MM-DD"' in page
    csv = client.get("/terminals/TA1/export.csv?start=2026/03/09&end=2026/3/9&channel=pm1.kw")
    assert csv.status_code == 200 and "2026-03-09 23:59:00" in csv.get_data(as_text=True)
    bad = client.get("/terminals/TA1/export.csv?start=09/03/2026&end=2026-03-09")
    assert bad.status_code == 400 and "is not a date" in bad.get_data(as_text=True)
    assert client.get("/alarms?from=2026/03/01&to=2026/03/10").status_code == 200
    with world.session() as s:
        s.get(User, world.ids["viewer_a"]).language = "ja"
        s.commit()
    page = client.get("/terminals/TA1").get_data(as_text=True)
    assert 'name="start" value="2026/03/09"' in page and 'placeholder="YYYY/MM/DD"' in page
