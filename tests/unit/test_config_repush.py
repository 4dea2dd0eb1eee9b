"""Re-pushing a config the terminal has not acknowledged in time
(:func:`cloud.services.configs.repush_due`): when, how often (backoff), only
once per due time, audited, never for an acknowledged or rejected config,
nothing half-done when the broker refuses; and what the operations console
and /metrics say about it. The broker end to end: tests/integration/
test_config_repush.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.models import AuditEntry, ConfigStatus, Terminal, TerminalConfig
from cloud.services import configs, console
from cloud.services.publisher import RecordingPublisher
from protocol import frames
from tests.support.web import login_as

DEADLINE = timedelta(minutes=10)
POLICY = configs.RepushPolicy(DEADLINE, timedelta(hours=1))
DOC = {"version": 1, "sampling": {}, "thresholds": [], "heartbeat": 300, "upload": 60}


def push(world, now, version=1):
    """What configs.save records for a published config."""
    with world.session() as s:
        t = s.get(Terminal, "TA1")
        t.push_config(version, now)
        s.add(
            TerminalConfig(
                terminal_id="TA1", version=version, document=dict(DOC, version=version),
                created_at=now,
            )
        )  # fmt: skip
        s.commit()


def repush(world, publisher, now):
    with world.session() as s:
        return configs.repush_due(s, publisher, POLICY, now=now).repushed


def row(world):
    with world.session() as s:
        t = s.get(Terminal, "TA1")
        s.expunge(t)
        return t


def heard(world, at):
    with world.session() as s:
        s.get(Terminal, "TA1").last_seen_at = at
        s.commit()


def test_the_pending_config_goes_out_again_once_after_the_deadline(world, clock):
    t0 = clock()
    push(world, t0)
    pub = RecordingPublisher()
    assert repush(world, pub, t0 + DEADLINE - timedelta(seconds=1)) == []
    assert repush(world, pub, t0 + DEADLINE) == ["TA1"]
    assert repush(world, pub, t0 + DEADLINE) == []  # claimed: not twice for one due time
    [msg] = pub.messages
    assert (msg.topic, msg.retain, msg.qos) == ("mm/v1/TA1/down/config", True, 1)
    frame = frames.decode(msg.payload)
    assert (frame["version"], frame["config"]) == (1, DOC)
    t = row(world)
    assert (t.config_status, t.config_repushes, t.config_repushed_at) == (
        ConfigStatus.PENDING,
        1,
        t0 + DEADLINE,
    )
    with world.session() as s:
        entry = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == configs.REPUSH_ACTION)
        ).one()
        assert (entry.actor, entry.object_id, entry.customer_id) == (
            "system",
            "TA1",
            world.ids["customer_a"],
        )
        assert (entry.details["version"], entry.details["repush"]) == (1, 1)


def test_later_re_pushes_wait_for_a_sign_of_life_and_twice_as_long_each_time(world, clock):
    t0 = clock()
    push(world, t0)
    pub = RecordingPublisher()
    first = t0 + DEADLINE
    assert repush(world, pub, first) == ["TA1"]
    # Not heard from since: the broker's retained copy is all it can get.
    assert repush(world, pub, first + timedelta(days=1)) == []
    heard(world, first + timedelta(minutes=1))
    assert repush(world, pub, first + 2 * DEADLINE - timedelta(seconds=1)) == []
    second = first + 2 * DEADLINE
    assert repush(world, pub, second) == ["TA1"]
    heard(world, second + timedelta(minutes=1))
    assert repush(world, pub, second + 4 * DEADLINE - timedelta(seconds=1)) == []
    third = second + 4 * DEADLINE
    assert repush(world, pub, third) == ["TA1"]
    assert POLICY.interval(4) == timedelta(hours=1)  # 80 min capped at max_interval
    assert POLICY.interval(60) == timedelta(hours=1)
    assert row(world).config_repushes == 3
    # A new config starts over.
    push(world, third, version=2)
    t = row(world)
    assert (t.config_repushes, t.config_repushed_at) == (0, None)


def test_acknowledged_and_rejected_configs_are_not_re_pushed(world, clock):
    t0 = clock()
    push(world, t0)
    with world.session() as s:
        s.get(Terminal, "TA1").config_acked(1, True, None, t0 + timedelta(seconds=5))
        s.commit()
    pub = RecordingPublisher()
    assert repush(world, pub, t0 + timedelta(days=1)) == []
    push(world, t0 + timedelta(days=1), version=2)
    with world.session() as s:
        s.get(Terminal, "TA1").config_acked(2, False, "thresholds[0]: bad", t0)
        s.commit()
    assert repush(world, pub, t0 + timedelta(days=2)) == []
    assert pub.messages == []


def test_a_refused_publish_changes_nothing_and_ends_the_pass(world, clock):
    t0 = clock()
    push(world, t0)
    with world.session() as s:
        result = configs.repush_due(
            s, RecordingPublisher(fail="broker down"), POLICY, now=t0 + DEADLINE
        )
    assert (result.repushed, result.error) == ([], "TA1: broker down")
    assert row(world).config_repushes == 0
    with world.session() as s:
        assert not s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == configs.REPUSH_ACTION)
        ).all()
    assert repush(world, RecordingPublisher(), t0 + DEADLINE) == ["TA1"]


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        configs.RepushPolicy(timedelta(0), timedelta(hours=1))
    with pytest.raises(ValueError):
        configs.RepushPolicy(timedelta(hours=2), timedelta(hours=1))


def test_console_and_metrics_show_the_re_pushes(world, clock, client):
    t0 = clock()
    push(world, t0)
    assert repush(world, RecordingPublisher(), t0 + DEADLINE) == ["TA1"]
    with world.session() as s:
        fleet = console.fleet(s, t0 + DEADLINE)
    assert (fleet.configs_pending, fleet.configs_repushed, fleet.config_repushes) == (1, 1, 1)
    assert fleet.last_repush_at == t0 + DEADLINE
    login_as(client, "operator")
    page = client.get("/admin").get_data(as_text=True)
    assert 'id="configs-repushed"' in page
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "mimamori_config_repushes 1.0" in metrics
