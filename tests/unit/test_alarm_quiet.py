"""Routing per channel and quiet times: targets narrowed to one channel or
contact input, and maintenance windows that record alarms as muted instead
of paging (SQLite file database, migrated like production)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.alarms import on_frame, remind_due
from cloud.alarms.policy import AlarmPolicy
from cloud.models import Alarm, AlarmState, MaintenanceWindow, Severity
from cloud.notify.targets import resolve
from cloud.ops import announcements
from tests.support.notify import T0, alarm_frame, database, leak_rule, ledger, target, world

MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.fixture
def session(tmp_path):
    with database(f"sqlite:///{tmp_path / 'db.sqlite3'}") as (_engine, s):
        yield s


@pytest.fixture
def terminal(session):
    t = world(session)
    leak_rule(session, t)
    return t


def feed(session, terminal, f, at=T0):
    on_frame(session, terminal, f, at, False)
    session.commit()


def window(session, terminal, start, end, *, channels=(), whole_customer=False):
    row = MaintenanceWindow(
        customer_id=terminal.customer_id,
        terminal_id=None if whole_customer else terminal.id,
        channels=list(channels),
        starts_at=start,
        ends_at=end,
        reason="panel work",
    )
    session.add(row)
    session.commit()
    return row


def recipients(session):
    return [(d.event, d.recipient) for d in ledger(session)]


def test_a_target_narrowed_to_one_channel_hears_only_that_channel(session, terminal):
    target(session, terminal, "all@example.com")
    narrow = target(session, terminal, "ior@example.com")
    narrow.channel_name = "ior"
    contact = target(session, terminal, "breaker@example.com", per_terminal=True)
    contact.channel_name = "kw"
    session.commit()

    def who(channel, cond="leak"):
        got = resolve(
            session, terminal.customer, terminal.id, cond, Severity.WARNING, channel=channel
        )
        return [r.address for r in got]

    assert who("ior") == ["all@example.com", "ior@example.com"]
    assert who("io") == ["all@example.com"]
    assert who("kw", "hi") == ["all@example.com", "breaker@example.com"]
    assert who(None, "offline") == ["all@example.com"]  # the terminal's own conditions
    # Through the engine: the alarm's channel decides.
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    assert recipients(session) == [("raised", "all@example.com"), ("raised", "ior@example.com")]


def test_an_alarm_inside_a_window_is_recorded_muted_and_pages_nobody(session, terminal):
    target(session, terminal, "boss@example.com")
    window(session, terminal, T0 - HOUR, T0 + HOUR)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    feed(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + MIN))
    feed(session, terminal, alarm_frame(2, "cleared", 250, 300, T0 + 2 * MIN))
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 3 * MIN))
    (alarm,) = session.scalars(sa.select(Alarm)).all()
    assert alarm.muted and alarm.state == AlarmState.CLEARED
    assert ledger(session) == []


def test_a_window_for_some_channels_mutes_only_those(session, terminal):
    target(session, terminal, "boss@example.com")
    window(session, terminal, T0 - HOUR, T0 + HOUR, channels=["io"], whole_customer=True)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, alias=0))  # io: muted
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, alias=1))  # ior: paged
    muted = {a.channel: a.muted for a in session.scalars(sa.select(Alarm))}
    assert muted == {"io": True, "ior": False}
    assert len(ledger(session)) == 1 and ledger(session)[0].payload["channel"] == "ior"


def test_the_window_is_judged_by_the_events_time_not_the_clock(session, terminal):
    target(session, terminal, "boss@example.com")
    window(session, terminal, T0 + HOUR, T0 + 2 * HOUR)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0))  # before the window
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 90 * MIN))  # inside it
    # Someone was paged, so the recovery reaches them even during the window.
    assert [e for e, _ in recipients(session)] == ["raised", "cleared"]


def test_an_alarm_that_outlives_the_window_is_paged_by_its_reminder(session, terminal):
    target(session, terminal, "boss@example.com")
    window(session, terminal, T0 - MIN, T0 + 30 * MIN)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    policy = AlarmPolicy(reminder_interval_s=3600)
    assert remind_due(session, T0 + 20 * MIN, policy) == 0
    assert ledger(session) == []
    assert remind_due(session, T0 + HOUR, policy) == 1  # the window ended meanwhile
    session.commit()
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 2 * HOUR))
    assert [e for e, _ in recipients(session)] == ["reminder", "cleared"]


def test_a_muted_alarm_that_clears_after_the_window_sends_no_recovery(session, terminal):
    target(session, terminal, "boss@example.com")
    window(session, terminal, T0 - MIN, T0 + 30 * MIN)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 40 * MIN))
    assert ledger(session) == []


def test_an_announcement_that_mutes_covers_its_customers(session, terminal):
    target(session, terminal, "boss@example.com")
    row = announcements.announce(
        session,
        title="Broker upgrade",
        starts_at=T0 - MIN,
        ends_at=T0 + HOUR,
        mute_alarms=True,
    )
    session.commit()
    (win,) = session.scalars(sa.select(MaintenanceWindow)).all()
    assert (win.customer_id, win.announcement_id) == (None, row.id)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    assert ledger(session) == []
    (alarm,) = session.scalars(sa.select(Alarm)).all()
    assert alarm.muted
