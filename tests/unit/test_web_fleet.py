"""The fleet overview: worst first, counted, searched, filtered and paged in SQL,
with a fixed number of queries per page whatever its length."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.models import (
    Alarm,
    AlarmState,
    ChannelLabel,
    ChannelSpec,
    Connectivity,
    Severity,
    Terminal,
    TerminalStatus,
    apply_birth,
)
from cloud.services import overview
from cloud.services.scope import Viewer
from cloud.timeseries import Point
from tests.support.web import T0, login_as

CHANNELS = [
    ChannelSpec(0, "leak1.ior", "mA", "leak", -1),
    ChannelSpec(1, "pm1.kw", "kW", "power", -2),
    ChannelSpec(2, "th1.t", "degC", "temp", -1),
    ChannelSpec(3, "di.di1", "", "contact", 0),
    ChannelSpec(4, "di.di2", "", "contact", 0),
]


def add_terminal(s, customer_id, tid, name, *, conn=Connectivity.ONLINE, alarms=(), **kw):
    s.add(Terminal(id=tid, customer_id=customer_id, name=name, connectivity=conn, **kw))
    s.flush()
    apply_birth(s, tid, CHANNELS, boot=1, at=T0 - timedelta(days=2))
    for i, (cond, severity, channel) in enumerate(alarms):
        s.add(
            Alarm(
                terminal_id=tid,
                channel=channel,
                cond=cond,
                severity=severity,
                state=AlarmState.RAISED,
                raised_at=T0 - timedelta(minutes=10 + i),
                value=1.0,
                threshold=1.0,
            )
        )


@pytest.fixture
def fleet(world):
    """Customer A gets one terminal of each status besides TA1 (warning)."""
    a = world.ids["customer_a"]
    with world.session() as s:
        add_terminal(s, a, "F-NORM", "Normal Hall", site_address="Osaka 1-2")
        add_terminal(s, a, "F-ALRM", "Pump House", alarms=[("leak", Severity.ALARM, "leak1.ior")])
        add_terminal(
            s,
            a,
            "F-OFF",
            "Far Away",
            conn=Connectivity.OFFLINE,
            alarms=[("offline", Severity.ALARM, None)],
        )
        add_terminal(
            s, a, "F-SENS", "Shaky Sensor", alarms=[("unreach", Severity.WARNING, "th1.t")]
        )
        add_terminal(s, a, "F-NEW", "Not Yet", conn=Connectivity.UNKNOWN)
        add_terminal(
            s,
            a,
            "F-SUSP",
            "Paused 100%",
            status=TerminalStatus.SUSPENDED,
            alarms=[("leak", Severity.ALARM, "leak1.ior")],
        )
        s.commit()
    world.store.write(
        [
            Point("F-ALRM", "leak1.ior", T0 - timedelta(minutes=1), 55.5),
            Point("F-ALRM", "di.di1", T0 - timedelta(minutes=1), 1),
            Point("F-NORM", "pm1.kw", T0 - timedelta(minutes=1), 12.25),
        ]
    )
    return world


def rows(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<tr class="st-\w+" data-terminal="([^"]+)" data-status="(\w+)"', html)


def test_worst_first_with_counts_in_the_summary(client, fleet):
    login_as(client, "viewer_a")
    html = client.get("/").get_data(as_text=True)
    assert rows(html) == [
        ("F-ALRM", "alarm"),
        ("TA1", "warning"),
        ("F-OFF", "offline"),  # its offline alarm does not make it an "alarm" terminal
        ("F-SENS", "sensor"),
        ("F-NEW", "new"),
        ("F-NORM", "normal"),
        ("F-SUSP", "inactive"),  # suspended: last, whatever its alarms
    ]
    for status, n in [("alarm", 1), ("warning", 1), ("offline", 1), ("sensor", 1), ("normal", 1)]:
        assert re.search(rf'data-status="{status}"[^>]*><b>{n}</b>', html), status
    line = html[html.index('data-terminal="F-ALRM"') :]
    line = line[: line.index("</tr>")]
    # No key channel marked: the first three, plus the alarmed one already among them.
    assert '<span class="sev-alarm">leak1.ior <b>55.5 <span class="unit">mA</span></b>' in line
    assert "pm1.kw" in line and "th1.t" in line and "di.di1" not in line
    assert "+2" in line


def test_key_channels_and_labels_on_the_line(client, fleet):
    with fleet.session() as s:
        s.add_all(
            [
                ChannelLabel(
                    terminal_id="F-ALRM",
                    channel="di.di1",
                    display_name="受電遮断器",
                    state_off="切",
                    state_on="入",
                    key=True,
                ),
                ChannelLabel(terminal_id="F-ALRM", channel="pm1.kw", display_name="Load", key=True),
                ChannelLabel(terminal_id="F-ALRM", channel="th1.t", display_name="Room"),
            ]
        )
        s.commit()
    login_as(client, "viewer_a")
    html = client.get("/").get_data(as_text=True)
    line = html[html.index('data-terminal="F-ALRM"') :]
    line = line[: line.index("</tr>")]
    names = re.findall(r"<span(?: class=\"sev-\w+\")?>([^<]+) <b>", line)
    # Key channels in alias order, then the alarmed channel, which is not a key one.
    assert names == ["Load", "受電遮断器", "leak1.ior"]
    assert "受電遮断器 <b>入</b>" in line
    assert "Room" not in line and "+2" in line


def test_search_by_name_id_and_address_and_filter_by_status(client, fleet):
    login_as(client, "viewer_a")
    assert [t for t, _ in rows(client.get("/?q=pump").get_data(as_text=True))] == ["F-ALRM"]
    assert [t for t, _ in rows(client.get("/?q=f-sen").get_data(as_text=True))] == ["F-SENS"]
    assert [t for t, _ in rows(client.get("/?q=osaka").get_data(as_text=True))] == ["F-NORM"]
    # Every word must match; "%" is a character, not a wildcard.
    assert rows(client.get("/?q=osaka+pump").get_data(as_text=True)) == []
    assert [t for t, _ in rows(client.get("/?q=100%25").get_data(as_text=True))] == ["F-SUSP"]
    html = client.get("/?status=offline").get_data(as_text=True)
    assert rows(html) == [("F-OFF", "offline")]
    # The band still counts everything the search matched.
    assert re.search(r'data-status="alarm"[^>]*><b>1</b>', html)
    html = client.get("/?status=bogus&q=" + "x" * 500).get_data(as_text=True)
    assert "No terminal matches." in html


def test_staff_see_every_customer_and_filter_by_one(client, fleet):
    login_as(client, "operator")
    every = [t for t, _ in rows(client.get("/").get_data(as_text=True))]
    assert "TB1" in every and "F-ALRM" in every
    only_b = client.get(f"/?customer={fleet.ids['customer_b']}").get_data(as_text=True)
    assert rows(only_b) == [("TB1", "alarm")]
    assert "Beta Kogyo" in only_b


def test_pages_hold_fifty_and_keep_the_filters(client, world):
    a = world.ids["customer_a"]
    with world.session() as s:
        for i in range(60):
            add_terminal(s, a, f"P{i:03d}", f"Plant {i:03d}")
        s.commit()
    login_as(client, "viewer_a")
    first = client.get("/?q=plant").get_data(as_text=True)
    assert len(rows(first)) == 50 and rows(first)[0][0] == "P000"
    assert 'href="/?q=plant&amp;page=2"' in first
    second = client.get("/?q=plant&page=2").get_data(as_text=True)
    assert [t for t, _ in rows(second)] == [f"P{i:03d}" for i in range(50, 60)]


def count_queries(engine, fn):
    statements = []

    def before(_conn, _cursor, statement, *_args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        fn()
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    return len(statements)


def test_a_page_costs_the_same_queries_for_five_terminals_or_fifty(world):
    a = world.ids["customer_a"]
    with world.session() as s:
        for i in range(50):
            add_terminal(s, a, f"Q{i:03d}", f"Q {i}", alarms=[("leak", Severity.WARNING, "pm1.kw")])
        s.commit()
    viewer = Viewer(world.ids["viewer_a"], "viewer@acme.test", "customer_viewer", a)

    def page(size):
        def run():
            with world.session() as s:
                result = overview.fleet(
                    s,
                    world.store,
                    viewer,
                    T0,
                    overview.Query(text="Q"),
                    default_interval_s=60,
                    page_size=size,
                )
                assert len(result.rows) == size

        return run

    assert count_queries(world.engine, page(5)) == count_queries(world.engine, page(50))
