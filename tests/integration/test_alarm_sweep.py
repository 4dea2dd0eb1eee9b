"""The periodic sweep and what it mails: reminders until acknowledged, digests of
historical alarms, offline by missed heartbeats, stale values and 30-minute
demand from the SQL time-series store; SQLite and PostgreSQL, real SMTP."""

from __future__ import annotations

import collections
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.alarms import AlarmPolicy, acknowledge, on_frame, sweep
from cloud.models import Alarm, AlarmCondition, AlarmState, Connectivity, Severity
from cloud.notify import outbox
from cloud.timeseries import Point, SqlStore
from tests.support.notify import (
    FAST,
    T0,
    alarm_frame,
    database,
    frame,
    leak_rule,
    ledger,
    settings_for,
    target,
    world,
)
from tests.support.smtp import SmtpSink

pytestmark = pytest.mark.integration

MIN = timedelta(minutes=1)


@pytest.fixture
def sink():
    with SmtpSink() as s:
        yield s


@pytest.fixture
def env(db_url):
    with database(db_url) as (engine, session):
        terminal = world(session, contracted_kw=100.0)
        leak_rule(session, terminal)
        target(session, terminal, "kanri@example.jp")
        target(session, terminal, "ops@example.com", language="en")
        yield engine, session, terminal


def alarms(session, cond=None):
    session.expire_all()
    stmt = sa.select(Alarm).order_by(Alarm.id)
    if cond:
        stmt = stmt.where(Alarm.cond == cond)
    return list(session.scalars(stmt))


def heartbeat_and_sweep(session, terminal, now, **kw):
    on_frame(session, terminal, frame("status", now), now, False)
    session.commit()
    return sweep(session, now, **kw)


def deliver(session, sink, now):
    outbox.run_once(session, now, settings_for(sink.port), FAST)
    return sink.messages


def test_reminders_repeat_until_acknowledged_and_are_counted(env, sink):
    _engine, session, terminal = env
    on_frame(session, terminal, alarm_frame(2, "raised", 312, 300, T0), T0, False)
    session.commit()
    for minutes in (30, 59, 60, 61, 119, 120, 121):
        heartbeat_and_sweep(session, terminal, T0 + minutes * MIN)
    (alarm,) = alarms(session)
    assert (alarm.reminders, alarm.last_reminder_at) == (2, T0 + 120 * MIN)
    acknowledge(session, alarm, None, T0 + 130 * MIN, comment="対応中")
    session.commit()
    for minutes in (180, 240, 600):
        assert heartbeat_and_sweep(session, terminal, T0 + minutes * MIN).reminders == 0
    deliver(session, sink, T0 + 600 * MIN)
    per = collections.Counter((m.rcpt_tos[0], m["X-Mimamori-Event"]) for m in sink.messages)
    for rcpt in ("kanri@example.jp", "ops@example.com"):
        assert [per[(rcpt, e)] for e in ("raised", "reminder", "acknowledged")] == [1, 2, 1]
    subjects = sorted(
        str(m["Subject"])
        for m in sink.messages
        if m.rcpt_tos[0] == "kanri@example.jp" and m["X-Mimamori-Event"] == "reminder"
    )
    assert ["再通知1回目" in subjects[0], "再通知2回目" in subjects[1]] == [True, True]
    assert all(r.billable for r in ledger(session))


def test_reminder_cap_and_interval_come_from_the_policy(env):
    _engine, session, terminal = env
    policy = AlarmPolicy(reminder_interval_s=600, max_reminders=3)
    on_frame(session, terminal, alarm_frame(2, "raised", 312, 300, T0), T0, False)
    session.commit()
    for minutes in range(0, 120, 5):
        heartbeat_and_sweep(session, terminal, T0 + minutes * MIN, policy=policy)
    assert alarms(session)[0].reminders == 3


def test_historical_alarms_arrive_as_one_digest_per_recipient(env, sink):
    _engine, session, terminal = env
    received = T0 + 2 * MIN  # the terminal came back and emptied its queue
    past = T0 - timedelta(hours=5)
    for f in (
        alarm_frame(1, "raised", 123, 100, past),
        alarm_frame(2, "raised", 312, 300, past + MIN),
        alarm_frame(2, "cleared", 200, 300, past + 7 * MIN),
        alarm_frame(1, "cleared", 50, 100, past + 9 * MIN),
    ):
        on_frame(session, terminal, f, received, True)
        session.commit()
    assert deliver(session, sink, received) == []  # no page for old news
    window_end = T0.replace(minute=15)
    messages = deliver(session, sink, window_end)
    assert sorted(m.rcpt_tos[0] for m in messages) == ["kanri@example.jp", "ops@example.com"]
    ja = next(m for m in messages if m.rcpt_tos[0] == "kanri@example.jp")
    assert str(ja["Subject"]) == "[mimamori] 過去の警報のまとめ (4件): 第1工場 受電盤 (T0001)"
    lines = [line for line in ja.body.splitlines() if line.startswith("  2026-")]
    assert lines[0].startswith("  2026-11-27 09:03 JST  発生  【注意】 ior 漏洩電流 12.3 mA")
    assert [line.split()[3] for line in lines] == [
        "発生",
        "警報レベルに上昇",
        "注意レベルに低下",
        "復旧",
    ]
    # No reminders for alarms nobody was paged about.
    heartbeat_and_sweep(session, terminal, T0 + 10 * 60 * MIN)
    assert alarms(session, "leak")[0].reminders == 0

    # More history after the digest went out starts a new digest; nothing is lost.
    on_frame(
        session,
        terminal,
        alarm_frame(1, "raised", 150, 100, past + 20 * MIN),
        window_end + MIN,
        True,
    )
    session.commit()
    later = deliver(session, sink, window_end + 15 * MIN)
    assert len(later) == 4 and "(1件)" in str(later[-2]["Subject"]) + str(later[-1]["Subject"])


def test_offline_after_missed_heartbeats_and_back_online(env, sink):
    _engine, session, terminal = env
    on_frame(session, terminal, frame("status", T0), T0, False)
    session.commit()
    assert sweep(session, T0 + 14 * MIN).offline == 0
    assert sweep(session, T0 + 15 * MIN).offline == 1
    assert sweep(session, T0 + 16 * MIN).offline == 0  # once
    session.refresh(terminal)
    assert terminal.connectivity == Connectivity.OFFLINE
    (alarm,) = alarms(session, "offline")
    assert (alarm.severity, alarm.value, alarm.threshold) == (Severity.ALARM, 900.0, 900.0)
    on_frame(session, terminal, frame("status", T0 + 20 * MIN), T0 + 20 * MIN, False)
    session.commit()
    assert alarms(session, "offline")[0].state == AlarmState.CLEARED
    events = [m["X-Mimamori-Event"] for m in deliver(session, sink, T0 + 20 * MIN)]
    assert sorted(events) == ["cleared", "cleared", "raised", "raised"]
    offline = next(
        m
        for m in sink.messages
        if m["X-Mimamori-Event"] == "raised" and m.rcpt_tos[0] == "ops@example.com"
    )
    assert (
        str(offline["Subject"])
        == "[mimamori] ALARM raised: 第1工場 受電盤 (T0001) terminal offline 900 s"
    )


def test_per_terminal_heartbeat_limit(env):
    _engine, session, terminal = env
    session.add(
        AlarmCondition(terminal_id=terminal.id, channel=None, cond="offline", on_delay_s=120)
    )
    session.commit()
    on_frame(session, terminal, frame("status", T0), T0, False)
    session.commit()
    assert sweep(session, T0 + MIN).offline == 0
    assert sweep(session, T0 + 2 * MIN).offline == 1


def test_stale_value_when_unchanged_or_missing_for_the_window(env):
    engine, session, terminal = env
    store = SqlStore(engine)
    session.add(AlarmCondition(terminal_id=terminal.id, channel="t", cond="stale", on_delay_s=600))
    session.commit()
    on_frame(session, terminal, frame("status", T0), T0, False)
    session.commit()
    start = int(T0.timestamp())
    store.write(Point("T0001", "t", start + 60 * i, 25.3) for i in range(11))  # stuck value
    now = T0 + 10 * MIN
    assert heartbeat_and_sweep(session, terminal, now, store=store).stale_checked == 1
    (alarm,) = alarms(session, "stale")
    assert (alarm.channel, alarm.severity, alarm.threshold) == ("t", Severity.WARNING, 600.0)
    store.write([Point("T0001", "t", start + 660, 25.4)])  # it moves again
    heartbeat_and_sweep(session, terminal, now + MIN, store=store)
    assert alarms(session, "stale")[0].state == AlarmState.CLEARED
    # Then no sample at all for the window (the terminal still sends heartbeats).
    heartbeat_and_sweep(session, terminal, now + 12 * MIN, store=store)
    assert [a.state for a in alarms(session, "stale")] == [AlarmState.CLEARED, AlarmState.RAISED]


def test_demand_prediction_over_the_contract_warns_and_clears(env, sink):
    engine, session, terminal = env  # contract 100 kW
    on_frame(session, terminal, frame("status", T0 + 30 * MIN), T0 + 30 * MIN, False)
    session.commit()  # heard from: no offline alarm muddles the mail count
    store = SqlStore(engine)
    period = T0.replace(minute=0)  # 14:00 JST
    base = int(period.timestamp())

    def load(minutes, kw):
        # energy counter and power every minute at a constant load from the period start
        points = []
        for m in range(minutes + 1):
            points.append(Point("T0001", "kwh", base + 60 * m, 5000.0 + kw * m / 60))
            points.append(Point("T0001", "kw", base + 60 * m, kw))
        store.write(points)

    load(10, 90.0)  # 90 kW: under the contract
    assert sweep(session, period + 10 * MIN, store).demand_checked == 1
    assert alarms(session, "demand") == []
    # Load rises to 110 kW for minutes 11..15: used 15 + 110 * 5/60 = 24.17 kWh, and
    # 24.17 + 110 * 15/60 = 51.67 kWh predicted for the half hour -> 103.3 kW.
    store.write(
        Point("T0001", "kwh", base + 60 * m, 5015.0 + 110.0 * (m - 10) / 60) for m in range(11, 16)
    )
    store.write(Point("T0001", "kw", base + 60 * m, 110.0) for m in range(11, 16))
    sweep(session, period + 15 * MIN, store)
    (alarm,) = alarms(session, "demand")
    assert (alarm.severity, alarm.channel, alarm.threshold) == (Severity.WARNING, "kwh", 100.0)
    assert alarm.value == pytest.approx(2 * (15 + 110 * 5 / 60 + 110 * 15 / 60))
    # Load shed to 60 kW: 24.17 + 3 = 27.17 kWh used, + 60 * 12/60 -> 78.3 kW: clears.
    used = 15 + 110 * 5 / 60
    store.write(
        Point("T0001", "kwh", base + 60 * m, 5000.0 + used + 1.0 * (m - 15)) for m in range(16, 19)
    )
    store.write(Point("T0001", "kw", base + 60 * m, 60.0) for m in range(16, 19))
    sweep(session, period + 18 * MIN, store)
    (alarm,) = alarms(session, "demand")
    assert alarm.state == AlarmState.CLEARED
    assert alarm.value == pytest.approx(2 * (used + 3 + 60 * 12 / 60))
    mails = deliver(session, sink, period + 18 * MIN)
    raised = next(
        m
        for m in mails
        if m["X-Mimamori-Event"] == "raised" and m.rcpt_tos[0] == "kanri@example.jp"
    )
    assert "デマンド超過予測 103.3 kW" in str(raised["Subject"])
    assert "しきい値  : 100.0 kW" in raised.body


def test_sweep_without_a_store_still_does_offline_and_reminders(env, caplog):
    _engine, session, terminal = env
    on_frame(session, terminal, frame("status", T0), T0, False)
    session.commit()
    result = sweep(session, T0 + 20 * MIN)
    assert (result.offline, result.stale_checked, result.demand_checked) == (1, 0, 0)
    assert "stale and demand not evaluated" in caplog.text
