"""The alarm state machine driven through ``on_frame``, as the ingest worker drives it
(SQLite file database, migrated like production).

Every test runs twice: with the engine querying open alarms itself, and with
them preloaded per transaction as the ingest worker does
(``cloud.alarms.lookups.preload``); the outcome must be the same."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.alarms import acknowledge, on_frame, resolve_manually
from cloud.alarms.conditions import sweep_offline
from cloud.alarms.lookups import preload
from cloud.errors import InvalidTransition, InvalidValue
from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    Connectivity,
    NotificationTarget,
    Severity,
    Terminal,
    lock_terminals,
)
from tests.support.notify import T0, alarm_frame, database, frame, leak_rule, ledger, target, world

MIN = timedelta(minutes=1)


@pytest.fixture(params=[False, True], ids=["queried", "preloaded"])
def session(tmp_path, request):
    with database(f"sqlite:///{tmp_path / 'db.sqlite3'}") as (_engine, s):
        s.info["test.preload"] = request.param
        yield s


@pytest.fixture
def terminal(session):
    t = world(session)
    leak_rule(session, t)
    target(session, t, "boss@example.com")
    return t


def feed(session, terminal, f, at=T0, historical=False):
    preloaded = None
    if session.info["test.preload"]:
        # The worker's order: it locks the batch's terminals, then preloads them.
        lock_terminals(session, [terminal.id])
        preloaded = preload(session, [terminal.id])
    on_frame(session, terminal, f, at, historical, preloaded=preloaded)
    session.commit()


def alarms(session):
    session.expire_all()
    return list(session.scalars(sa.select(Alarm).order_by(Alarm.id)))


def events(session):
    return [(d.event, d.dedup_key) for d in ledger(session)]


def test_warning_escalation_deescalation_and_recovery_each_notify_once(session, terminal):
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0))
    feed(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + MIN))
    feed(session, terminal, alarm_frame(2, "cleared", 250, 300, T0 + 2 * MIN))
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 3 * MIN))

    (alarm,) = alarms(session)
    assert alarm.state == AlarmState.CLEARED and alarm.severity == Severity.WARNING
    assert (alarm.channel, alarm.cond) == ("ior", "leak")
    assert alarm.raised_at == T0 and alarm.cleared_at == T0 + 3 * MIN
    assert alarm.value == 5.0  # raw 50 in 0.1 mA
    assert [e for e, _ in events(session)] == ["raised", "escalated", "deescalated", "cleared"]
    keys = [k for _, k in events(session)]
    t = session.scalars(sa.select(NotificationTarget)).one().id
    assert keys[0] == f"alarm:{alarm.id}:raised:{t}"
    assert keys[1] == f"alarm:{alarm.id}:escalated@{int((T0 + MIN).timestamp())}:{t}"
    assert keys[3] == f"alarm:{alarm.id}:cleared:{t}"


def test_who_was_paged_at_alarm_level_hears_the_recovery_after_a_de_escalation(session, terminal):
    target(session, terminal, "oncall@example.com", min_severity=Severity.ALARM)
    target(session, terminal, "night@example.com", min_severity=Severity.ALARM)
    session.commit()
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0))
    feed(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + MIN))
    feed(session, terminal, alarm_frame(2, "cleared", 250, 300, T0 + 2 * MIN))
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + 3 * MIN))
    by_event: dict[str, set[str]] = {}
    for d in ledger(session):
        by_event.setdefault(d.event, set()).add(d.recipient)
    everyone = {"boss@example.com", "oncall@example.com", "night@example.com"}
    assert by_event["raised"] == {"boss@example.com"}
    assert by_event["escalated"] == everyone
    assert by_event["cleared"] == everyone


def test_alarm_level_targets_hear_nothing_of_a_warning_that_never_escalated(session, terminal):
    target(session, terminal, "oncall@example.com", min_severity=Severity.ALARM)
    session.commit()
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0))
    feed(session, terminal, alarm_frame(1, "cleared", 50, 100, T0 + MIN))
    assert {d.recipient for d in ledger(session)} == {"boss@example.com"}


def test_values_are_scaled_by_the_channel_exponent(session, terminal):
    feed(session, terminal, alarm_frame(2, "raised", 312, 300))
    (alarm,) = alarms(session)
    assert (alarm.value, alarm.threshold, alarm.severity) == (31.2, 30.0, Severity.ALARM)
    (row,) = ledger(session)
    assert row.payload["value_text"] == "31.2 mA"
    assert row.payload["threshold_text"] == "30.0 mA"


def test_repeated_and_reordered_frames_change_nothing(session, terminal):
    f = alarm_frame(1, "raised", 123, 100)
    feed(session, terminal, f)
    feed(session, terminal, f)  # QoS 1 redelivery that slipped past dedup
    feed(session, terminal, alarm_frame(1, "cleared", 20, 100, T0 + MIN))
    feed(session, terminal, alarm_frame(1, "cleared", 20, 100, T0 + MIN))  # cleared twice
    feed(session, terminal, alarm_frame(2, "cleared", 20, 300, T0 + MIN))  # nothing open
    assert [e for e, _ in events(session)] == ["raised", "cleared"]
    assert len(alarms(session)) == 1


def test_a_lower_level_raised_under_a_higher_one_is_ignored(session, terminal):
    feed(session, terminal, alarm_frame(2, "raised", 312, 300))
    feed(session, terminal, alarm_frame(1, "raised", 312, 100))
    (alarm,) = alarms(session)
    assert alarm.severity == Severity.ALARM
    assert [e for e, _ in events(session)] == ["raised"]


def test_alarm_level_clear_without_a_warn_level_clears_the_alarm(session, terminal):
    rule = session.scalars(sa.select(AlarmCondition)).one()
    rule.warn = None
    session.commit()
    feed(session, terminal, alarm_frame(2, "raised", 312, 300))
    feed(session, terminal, alarm_frame(2, "cleared", 100, 300, T0 + MIN))
    assert alarms(session)[0].state == AlarmState.CLEARED
    assert [e for e, _ in events(session)] == ["raised", "cleared"]


def test_a_new_occurrence_after_recovery_is_a_new_alarm_with_its_own_mails(session, terminal):
    for minute in (0, 10):
        feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0 + minute * MIN))
        feed(session, terminal, alarm_frame(1, "cleared", 20, 100, T0 + (minute + 1) * MIN))
    assert [a.state for a in alarms(session)] == [AlarmState.CLEARED, AlarmState.CLEARED]
    assert len({k for _, k in events(session)}) == 4


def test_acknowledge_notifies_and_escalation_re_arms(session, terminal):
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    (alarm,) = alarms(session)
    acknowledge(session, alarm, None, T0 + MIN, comment="見に行きます")
    session.commit()
    assert alarm.state == AlarmState.ACKNOWLEDGED
    with pytest.raises(InvalidTransition):
        acknowledge(session, alarm, None, T0 + MIN)
    session.rollback()
    feed(session, terminal, alarm_frame(2, "raised", 312, 300, T0 + 2 * MIN))
    (alarm,) = alarms(session)
    assert alarm.state == AlarmState.RAISED and alarm.severity == Severity.ALARM
    rows = ledger(session)
    assert [r.event for r in rows] == ["raised", "acknowledged", "escalated"]
    assert rows[1].payload["comment"] == "見に行きます"


def test_manual_resolve_sends_recovery(session, terminal):
    feed(session, terminal, alarm_frame(1, "raised", 123, 100))
    (alarm,) = alarms(session)
    resolve_manually(session, alarm, T0 + MIN)
    session.commit()
    assert [e for e, _ in events(session)] == ["raised", "cleared"]
    with pytest.raises(InvalidTransition):
        resolve_manually(session, alarm, T0 + 2 * MIN)


def test_unknown_alias_is_kept_visible_and_unscaled(session, terminal):
    feed(session, terminal, alarm_frame(2, "raised", 5, 3, alias=40, cond="hi"))
    (alarm,) = alarms(session)
    assert (alarm.channel, alarm.value) == ("#40", 5.0)


def test_unreachable_sensor_uses_the_failed_read_count_as_is(session, terminal):
    feed(session, terminal, alarm_frame(2, "raised", None, 3, alias=5, cond="unreach"))
    feed(session, terminal, alarm_frame(2, "cleared", 253, 3, T0 + MIN, alias=5, cond="unreach"))
    (alarm,) = alarms(session)
    assert alarm.state == AlarmState.CLEARED and alarm.threshold == 3.0
    assert [e for e, _ in events(session)] == ["raised", "cleared"]


def test_a_will_shows_offline_at_once_and_the_alarm_waits_for_the_rules_delay(session, terminal):
    feed(session, terminal, frame("status", T0), at=T0)
    feed(session, terminal, frame("death", T0 - MIN), at=T0 + 5 * MIN)
    session.refresh(terminal)
    assert terminal.connectivity == Connectivity.OFFLINE
    assert alarms(session) == []  # within the default 15 minutes: nobody paged yet
    assert sweep_offline(session, T0 + 14 * MIN) == 0
    assert sweep_offline(session, T0 + 16 * MIN) == 1  # 16 minutes after the last frame
    assert sweep_offline(session, T0 + 17 * MIN) == 0  # one alarm per outage
    (alarm,) = alarms(session)
    assert (alarm.cond, alarm.channel, alarm.severity) == ("offline", None, Severity.ALARM)
    feed(session, terminal, frame("birth", T0 + 20 * MIN), at=T0 + 20 * MIN)
    session.refresh(terminal)
    assert terminal.connectivity == Connectivity.ONLINE
    assert alarms(session)[0].state == AlarmState.CLEARED
    assert alarms(session)[0].cleared_at == T0 + 20 * MIN
    assert [e for e, _ in events(session)] == ["raised", "cleared"]


def test_a_link_that_drops_and_returns_within_the_delay_pages_nobody(session, terminal):
    for k in range(3):  # three short drops, each back within minutes
        t = T0 + k * 10 * MIN
        feed(session, terminal, frame("status", t), at=t)
        feed(session, terminal, frame("death", t), at=t + MIN)
        assert sweep_offline(session, t + 2 * MIN) == 0
        feed(session, terminal, frame("birth", t + 3 * MIN), at=t + 3 * MIN)
    assert alarms(session) == [] and events(session) == []


def test_an_offline_alarm_resolved_by_hand_is_not_raised_again_while_offline(session, terminal):
    feed(session, terminal, frame("status", T0), at=T0)
    feed(session, terminal, frame("death", T0), at=T0 + MIN)
    assert sweep_offline(session, T0 + 20 * MIN) == 1
    (alarm,) = alarms(session)
    resolve_manually(session, alarm, T0 + 21 * MIN)
    session.commit()
    assert sweep_offline(session, T0 + 40 * MIN) == 0
    assert len(alarms(session)) == 1


def test_a_stale_will_from_an_older_boot_or_connection_is_ignored(session, terminal):
    feed(session, terminal, frame("status", T0), at=T0)
    feed(session, terminal, frame("death", T0, boot=2), at=T0 + MIN)  # older boot
    feed(session, terminal, frame("death", T0), at=T0 - MIN)  # older than the last frame
    session.refresh(terminal)
    assert terminal.connectivity == Connectivity.ONLINE and alarms(session) == []


def test_unsynced_live_frames_raise_clock_and_synced_ones_clear_it(session, terminal):
    feed(session, terminal, frame("status", T0, unsynced=True))
    feed(session, terminal, frame("data", T0 + MIN, unsynced=True), at=T0 + MIN)
    (alarm,) = alarms(session)
    assert (alarm.cond, alarm.severity, alarm.state) == (
        "clock",
        Severity.WARNING,
        AlarmState.RAISED,
    )
    # Old data from the queue says nothing about the clock now.
    feed(session, terminal, frame("data", T0 - 60 * MIN), at=T0 + 2 * MIN, historical=True)
    assert alarms(session)[0].state == AlarmState.RAISED
    feed(session, terminal, frame("status", T0 + 3 * MIN), at=T0 + 3 * MIN)
    assert alarms(session)[0].state == AlarmState.CLEARED


def test_an_unsynced_alarm_frame_is_timed_by_the_cloud(session, terminal):
    wrong = T0 - timedelta(days=9000)  # a board that booted at its 2000-01-01 epoch
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, wrong, unsynced=True), at=T0)
    assert next(a for a in alarms(session) if a.cond == "leak").raised_at == T0


def test_historical_alarms_go_to_a_digest_not_a_page(session, terminal):
    past = T0 - timedelta(hours=3)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, past), historical=True)
    feed(session, terminal, alarm_frame(1, "cleared", 20, 100, past + 5 * MIN), historical=True)
    (alarm,) = alarms(session)
    assert alarm.historical and alarm.state == AlarmState.CLEARED
    (digest,) = ledger(session)
    assert digest.event == "digest" and digest.alarm_id is None
    assert [i["event"] for i in digest.payload["items"]] == ["raised", "cleared"]
    # Due at the end of the 15-minute window holding the time it was received.
    assert digest.next_attempt_at == T0.replace(minute=15)


def test_webhook_targets_get_historical_events_one_by_one(session, terminal):
    from cloud.models import DeliveryChannel

    target(session, terminal, "https://hooks.example.com/x", channel=DeliveryChannel.WEBHOOK)
    feed(session, terminal, alarm_frame(1, "raised", 123, 100, T0 - MIN), historical=True)
    rows = ledger(session)
    assert sorted(r.event for r in rows) == ["digest", "raised"]
    hook = next(r for r in rows if r.channel == DeliveryChannel.WEBHOOK)
    assert hook.payload["historical"] is True


def test_terminal_without_customer_alarms_without_notifying(session):

    lone = Terminal(id="STOCK1")
    session.add(lone)
    session.commit()
    feed(session, lone, alarm_frame(2, "raised", 1, 1, alias=None, cond="contact"))
    assert len(alarms(session)) == 1 and ledger(session) == []


def test_naive_received_at_is_refused(session, terminal):
    with pytest.raises(InvalidValue):
        on_frame(session, terminal, frame("status"), T0.replace(tzinfo=None), False)


def test_ledger_rows_commit_with_the_alarm_or_not_at_all(session, terminal):
    on_frame(session, terminal, alarm_frame(1, "raised", 123, 100), T0, False)
    session.rollback()  # the ingest failed to store the frame
    assert alarms(session) == [] and ledger(session) == []


def test_cloud_conditions_escalate_and_de_escalate_to_the_level_given(session, terminal):
    from cloud.alarms.engine import Context, clear_condition, raise_condition

    ctx = Context(T0)
    for severity, value in (
        (Severity.WARNING, 105.0),
        (Severity.ALARM, 130.0),
        (Severity.ALARM, 131.0),
        (Severity.WARNING, 104.0),
    ):
        raise_condition(
            session,
            terminal,
            "kwh",
            "demand",
            severity=severity,
            value=value,
            threshold=100.0,
            ctx=ctx,
        )
    clear_condition(session, terminal, "kwh", "demand", value=80.0, ctx=ctx)
    session.commit()
    (alarm,) = alarms(session)
    assert (alarm.state, alarm.value) == (AlarmState.CLEARED, 80.0)
    assert [e for e, _ in events(session)] == ["raised", "escalated", "deescalated", "cleared"]


def test_queued_frames_do_not_bring_an_offline_terminal_back(session, terminal):
    feed(session, terminal, frame("status", T0), at=T0)
    feed(session, terminal, frame("death", T0), at=T0 + MIN)
    assert sweep_offline(session, T0 + 20 * MIN) == 1
    # Frames that waited at the broker, delivered later: no sign of life now.
    feed(session, terminal, frame("status", T0 - MIN), at=T0 + 21 * MIN, historical=True)
    feed(session, terminal, frame("status", T0, boot=2), at=T0 + 21 * MIN)  # an older boot
    assert alarms(session)[0].state == AlarmState.RAISED
    feed(session, terminal, frame("birth", T0 + 22 * MIN), at=T0 + 22 * MIN)
    assert alarms(session)[0].state == AlarmState.CLEARED
