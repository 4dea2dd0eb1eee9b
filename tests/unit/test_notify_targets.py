"""Who gets what: target resolution by customer, terminal, condition, severity."""

from __future__ import annotations

import pytest

from cloud.models import Customer, DeliveryChannel, Severity, Terminal
from cloud.notify.targets import resolve
from tests.support.notify import database, target, world


@pytest.fixture
def session(tmp_path):
    with database(f"sqlite:///{tmp_path / 'db.sqlite3'}") as (_engine, s):
        yield s


@pytest.fixture
def terminal(session):
    return world(session)


def addresses(session, terminal, cond="leak", severity=Severity.WARNING, recovery=False):
    got = resolve(session, terminal.customer, terminal.id, cond, severity, recovery=recovery)
    return [r.address for r in got]


def test_several_addresses_per_customer_all_receive(session, terminal):
    for a in ("a@example.com", "b@example.com", "c@example.com"):
        target(session, terminal, a)
    assert addresses(session, terminal) == ["a@example.com", "b@example.com", "c@example.com"]


def test_min_severity_filters_warnings(session, terminal):
    target(session, terminal, "all@example.com")
    target(session, terminal, "pager@example.com", min_severity=Severity.ALARM)
    assert addresses(session, terminal, severity=Severity.WARNING) == ["all@example.com"]
    assert addresses(session, terminal, severity=Severity.ALARM) == [
        "all@example.com",
        "pager@example.com",
    ]


def test_per_terminal_and_per_condition_targets(session, terminal):
    other = Terminal(id="T0002", customer_id=terminal.customer_id)
    session.add(other)
    session.commit()
    target(session, terminal, "site1@example.com", per_terminal=True)
    target(session, terminal, "leak@example.com", cond="leak")
    assert addresses(session, terminal, cond="leak") == ["site1@example.com", "leak@example.com"]
    assert addresses(session, terminal, cond="offline") == ["site1@example.com"]
    assert addresses(session, other, cond="leak") == ["leak@example.com"]
    assert addresses(session, other, cond="offline") == []


def test_recovery_only_to_targets_that_want_it(session, terminal):
    target(session, terminal, "yes@example.com")
    target(session, terminal, "no@example.com", recovery=False)
    assert addresses(session, terminal, recovery=True) == ["yes@example.com"]


def test_one_address_matched_twice_is_one_recipient_the_most_specific(session, terminal):
    general = target(session, terminal, "Boss@Example.com", language="en")
    specific = target(session, terminal, "boss@example.com", per_terminal=True, cond="leak")
    got = resolve(session, terminal.customer, terminal.id, "leak", Severity.ALARM)
    assert [(r.address, r.target_id) for r in got] == [("boss@example.com", specific.id)]
    assert general.id != specific.id


def test_same_address_on_email_and_webhook_are_distinct_channels(session, terminal):
    target(session, terminal, "ops@example.com")
    target(session, terminal, "https://ops.example.com/hook", channel=DeliveryChannel.WEBHOOK)
    got = resolve(session, terminal.customer, terminal.id, "leak", Severity.WARNING)
    assert [r.channel for r in got] == [DeliveryChannel.EMAIL, DeliveryChannel.WEBHOOK]


def test_language_falls_back_to_the_customers(session, terminal):
    target(session, terminal, "ja@example.com")
    target(session, terminal, "en@example.com", language="en")
    got = resolve(session, terminal.customer, terminal.id, "leak", Severity.WARNING)
    assert [(r.address, r.language) for r in got] == [
        ("ja@example.com", "ja"),
        ("en@example.com", "en"),
    ]


def test_disabled_targets_other_customers_and_inactive_customers_get_nothing(session, terminal):
    t = target(session, terminal, "off@example.com")
    t.enabled = False
    stranger = Customer(name="Other")
    session.add(stranger)
    session.flush()
    other_terminal = Terminal(id="X1", customer=stranger)
    session.add(other_terminal)
    session.commit()
    target(session, other_terminal, "stranger@example.com")
    assert addresses(session, terminal) == []
    target(session, terminal, "on@example.com")
    assert addresses(session, terminal) == ["on@example.com"]
    terminal.customer.active = False
    session.commit()
    assert addresses(session, terminal) == []
    assert resolve(session, None, "X9", "leak", Severity.ALARM) == []
