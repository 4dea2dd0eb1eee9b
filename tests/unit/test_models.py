"""Relational model behaviour on the embedded database (SQLite, migrated schema)."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud import db
from cloud.errors import InvalidTransition, InvalidValue
from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    AuditEntry,
    Channel,
    ChannelSpec,
    ConfigStatus,
    Customer,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    ForwardingEndpoint,
    NotificationTarget,
    Role,
    Severity,
    Terminal,
    User,
    apply_birth,
)
from cloud.services.credentials import check_mqtt_password, set_mqtt_password

JST = ZoneInfo("Asia/Tokyo")
T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
# Written by Mosquitto 2.0.11's `mosquitto_passwd -c -b pw alice secret`.
MOSQUITTO_LINE = (
    "alice:$7$101$1k402sfaQls7/gZW$80xKWD4Z9jxY2rnP8NXN/a/W9b4/lOTk9G7Ua/q7xO7OEpojrRi9e11Dqgg"
    "DOH96GT17yg7t8LaY0sq+uV/05A=="
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "template.sqlite3"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def session(template, tmp_path):
    path = tmp_path / "db.sqlite3"
    shutil.copy(template, path)
    engine = db.make_engine(f"sqlite:///{path}")
    with db.session_factory(engine)() as s:
        yield s
    engine.dispose()


def add_terminal(s: Session, tid: str = "T0001") -> Terminal:
    customer = Customer(name="Acme")
    terminal = Terminal(id=tid, customer=customer, name="Sub 1")
    s.add_all([customer, terminal])
    s.commit()
    return terminal


# -- datetimes --------------------------------------------------------------


def test_datetimes_come_back_aware_utc_whatever_zone_went_in(session):
    at_jst = datetime(2025, 4, 1, 18, 30, tzinfo=JST)
    c = Customer(name="Acme", created_at=at_jst)
    session.add(c)
    session.commit()
    session.expire_all()
    got = session.get(Customer, c.id).created_at
    assert got == at_jst
    assert got.tzinfo is UTC
    assert got.hour == 9


def test_naive_datetime_is_refused(session):
    session.add(Customer(name="Acme", created_at=datetime(2025, 4, 1, 9, 0)))
    with pytest.raises(sa.exc.StatementError) as info:
        session.commit()
    assert isinstance(info.value.orig, InvalidValue)


def test_datetime_comparisons_in_sql_follow_instants_not_wall_clocks(session):
    # 08:00 JST is 23:00 UTC the day before: earlier than 09:00 UTC.
    early = Customer(name="early", created_at=datetime(2025, 4, 1, 8, 0, tzinfo=JST))
    late = Customer(name="late", created_at=datetime(2025, 4, 1, 9, 0, tzinfo=UTC))
    session.add_all([late, early])
    session.commit()
    names = session.scalars(sa.select(Customer.name).order_by(Customer.created_at)).all()
    assert names == ["early", "late"]
    cutoff = datetime(2025, 4, 1, 0, 0, tzinfo=UTC)
    assert session.scalars(sa.select(Customer.name).where(Customer.created_at < cutoff)).all() == [
        "early"
    ]


# -- customers and users ------------------------------------------------------


def test_customer_defaults_and_validation(session):
    c = Customer(name="Acme")
    session.add(c)
    session.commit()
    assert (c.timezone, c.language) == ("Asia/Tokyo", "ja")
    assert c.zone == JST
    with pytest.raises(InvalidValue):
        c.timezone = "Mars/Olympus"
    with pytest.raises(InvalidValue):
        c.language = "fr"
    with pytest.raises(InvalidValue):
        c.contracted_demand_kw = 0


def test_user_email_is_normalized_and_unique(session):
    c = Customer(name="Acme")
    session.add(User(email="  Alice@Example.COM ", password_hash="x", role=Role.OPERATOR))
    session.commit()
    assert session.scalar(sa.select(User.email)) == "alice@example.com"
    session.add(
        User(email="alice@example.com", password_hash="y", role=Role.CUSTOMER_ADMIN, customer=c)
    )
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    with pytest.raises(InvalidValue):
        User(email="not-an-address", password_hash="x", role=Role.OPERATOR)


def test_customer_roles_need_a_customer_staff_do_not(session):
    session.add(User(email="op@example.com", password_hash="x", role=Role.OPERATOR))
    session.commit()
    session.add(User(email="viewer@example.com", password_hash="x", role=Role.CUSTOMER_VIEWER))
    with pytest.raises(sa.exc.IntegrityError, match="customer_role_needs_customer"):
        session.commit()


def test_role_column_rejects_values_outside_the_enum(session):
    with pytest.raises(sa.exc.IntegrityError, match="ck_users_role"):
        session.execute(
            sa.text(
                "INSERT INTO users (email, name, password_hash, role, language, active, "
                "failed_logins, created_at) VALUES ('x@example.com', '', 'h', 'root', 'ja', 1, 0, "
                "'2025-01-01 00:00:00')"
            )
        )


def test_failed_logins_lock_then_a_good_login_unlocks(session):
    u = User(email="op@example.com", password_hash="x", role=Role.OPERATOR)
    session.add(u)
    session.commit()
    assert not u.record_failed_login(T0, lock_after=3, lock_for_s=600)
    assert not u.record_failed_login(T0, lock_after=3, lock_for_s=600)
    assert u.record_failed_login(T0, lock_after=3, lock_for_s=600)
    session.commit()
    assert u.is_locked(T0 + timedelta(seconds=599))
    assert not u.is_locked(T0 + timedelta(seconds=600))
    u.record_login(T0 + timedelta(hours=1))
    assert (u.failed_logins, u.locked_until) == (0, None)


# -- terminals --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "a/b", "T+1", "T#", "a:b", "x" * 33, "caf\u00e9", "a b"])
def test_terminal_ids_that_would_break_topics_or_password_files_are_refused(bad):
    with pytest.raises(InvalidValue):
        Terminal(id=bad)


def test_mqtt_credential_is_a_mosquitto_hash_never_the_password(session):
    t = add_terminal(session)
    set_mqtt_password(t, "s3cret-pass")
    session.commit()
    stored = session.scalar(sa.select(Terminal.credential_hash))
    assert stored.startswith("$7$101$") and "s3cret" not in stored
    assert check_mqtt_password(t, "s3cret-pass")
    assert not check_mqtt_password(t, "s3cret-pasS")
    with pytest.raises(InvalidValue):
        set_mqtt_password(t, "")


def test_hash_written_by_mosquitto_passwd_verifies():
    _user, _, hashed = MOSQUITTO_LINE.partition(":")
    t = Terminal(id="T1", credential_hash=hashed)
    assert check_mqtt_password(t, "secret")
    assert not check_mqtt_password(t, "Secret")
    t.credential_hash = "$7$101$notbase64!$x"
    with pytest.raises(InvalidValue):
        check_mqtt_password(t, "secret")


def test_config_rollout_moves_version_in_force_only_when_applied(session):
    t = add_terminal(session)
    assert t.config_status == ConfigStatus.NONE
    t.push_config(1, T0)
    t.config_acked(1, applied=True, reason=None, at=T0)
    assert (t.config_version, t.config_status) == (1, ConfigStatus.APPLIED)
    t.push_config(2, T0)
    with pytest.raises(InvalidTransition):
        t.config_acked(1, applied=True, reason=None, at=T0)  # stale ack
    t.config_acked(2, applied=False, reason="bad threshold for ior", at=T0)
    session.commit()
    assert (t.config_version, t.config_status) == (1, ConfigStatus.REJECTED)
    assert t.config_reason == "bad threshold for ior"
    with pytest.raises(InvalidTransition):
        t.push_config(1, T0)  # not newer than the one in force
    with pytest.raises(InvalidTransition):
        t.config_acked(2, applied=True, reason=None, at=T0)  # nothing pending


def test_billing_dates_are_plain_dates(session):
    t = add_terminal(session)
    t.registered_on = date(2025, 4, 1)
    t.cancellation_notice_on = date(2025, 9, 15)
    session.commit()
    session.expire_all()
    assert session.get(Terminal, "T0001").cancellation_notice_on == date(2025, 9, 15)


# -- channels from births -------------------------------------------------------

BIRTH = [
    ChannelSpec(0, "io", "mA", "leak", -1),
    ChannelSpec(1, "ior", "mA", "leak", -1),
    ChannelSpec(2, "t", "degC", "temperature", -1),
]


def test_same_birth_twice_changes_nothing(session):
    add_terminal(session)
    assert apply_birth(session, "T0001", BIRTH, boot=1, at=T0)
    session.commit()
    assert not apply_birth(session, "T0001", list(reversed(BIRTH)), boot=2, at=T0)
    session.commit()
    assert session.scalar(sa.select(sa.func.count()).select_from(Channel)) == 3


def test_changed_birth_retires_old_channels_and_keeps_history(session):
    t = add_terminal(session)
    apply_birth(session, "T0001", BIRTH, boot=1, at=T0)
    session.commit()
    later = T0 + timedelta(days=3)
    new = [ChannelSpec(0, "kw", "kW", "power", -2), ChannelSpec(1, "ior", "mA", "leak", -1)]
    assert apply_birth(session, "T0001", new, boot=2, at=later)
    session.commit()
    session.expire_all()
    assert [(c.alias, c.name, c.boot) for c in t.channels] == [(0, "kw", 2), (1, "ior", 2)]
    retired = session.scalars(sa.select(Channel).where(Channel.retired_at.is_not(None))).all()
    assert sorted(c.name for c in retired) == ["io", "ior", "t"]
    assert {c.retired_at for c in retired} == {later}


def test_current_channels_are_unique_per_alias_and_name(session):
    add_terminal(session)
    apply_birth(session, "T0001", BIRTH, boot=1, at=T0)
    session.commit()
    session.add(Channel(terminal_id="T0001", alias=0, name="x", kind="k", boot=1, declared_at=T0))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    with pytest.raises(InvalidValue):
        apply_birth(session, "T0001", [BIRTH[0], BIRTH[0]._replace(name="io2")], 1, T0)
    with pytest.raises(InvalidValue):
        apply_birth(session, "T0001", [ChannelSpec(64, "x", "", "k")], 1, T0)


# -- alarms -----------------------------------------------------------------


def test_threshold_override_reverts_by_itself(session):
    add_terminal(session)
    cond = AlarmCondition(terminal_id="T0001", channel="ior", cond="high", warn=5.0, alarm=10.0)
    cond.set_override(50.0, 100.0, until=T0 + timedelta(hours=2), now=T0)
    session.add(cond)
    session.commit()
    assert cond.levels(T0 + timedelta(hours=1)) == (50.0, 100.0)
    assert cond.levels(T0 + timedelta(hours=2)) == (5.0, 10.0)
    with pytest.raises(InvalidValue):
        cond.set_override(1.0, 2.0, until=T0, now=T0)


def test_one_condition_per_terminal_channel_and_kind(session):
    add_terminal(session)
    session.add_all(
        [
            AlarmCondition(terminal_id="T0001", channel="ior", cond="high", warn=5.0),
            AlarmCondition(terminal_id="T0001", channel=None, cond="offline"),
        ]
    )
    session.commit()
    session.add(AlarmCondition(terminal_id="T0001", channel=None, cond="offline"))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    session.add(AlarmCondition(terminal_id="T0001", channel="ior", cond="leak", count=3))
    with pytest.raises(sa.exc.IntegrityError, match="count_with_window"):
        session.commit()


def new_alarm(channel: str | None = "ior", cond: str = "high") -> Alarm:
    return Alarm(
        terminal_id="T0001",
        channel=channel,
        cond=cond,
        severity=Severity.WARNING,
        raised_at=T0,
        value=6.0,
        threshold=5.0,
    )


def test_alarm_state_machine(session):
    add_terminal(session)
    a = new_alarm()
    session.add(a)
    session.commit()
    assert a.state == AlarmState.RAISED and a.is_open
    a.reminded(T0 + timedelta(minutes=30))
    assert a.change_severity(Severity.ALARM, 12.0, 10.0)
    assert not a.change_severity(Severity.ALARM, 13.0, 10.0)
    a.acknowledge(None, T0 + timedelta(hours=1), "crew on site")
    with pytest.raises(InvalidTransition):
        a.acknowledge(None, T0, None)
    with pytest.raises(InvalidTransition):
        a.reminded(T0)
    a.clear(T0 + timedelta(hours=2), value=1.0)
    session.commit()
    assert (a.state, a.reminders, a.ack_comment) == (AlarmState.CLEARED, 1, "crew on site")
    for move in (lambda: a.clear(T0), lambda: a.change_severity(Severity.ALARM, 1, 1)):
        with pytest.raises(InvalidTransition):
            move()


@pytest.mark.parametrize("channel", ["ior", None])
def test_only_one_open_alarm_per_terminal_channel_condition(session, channel):
    add_terminal(session)
    first = new_alarm(channel)
    session.add(first)
    session.commit()
    session.add(new_alarm(channel))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    first.clear(T0)
    session.add(new_alarm(channel))  # once cleared, the condition may raise again
    session.add(new_alarm(channel, cond="low"))
    session.commit()


# -- notifications, forwarding, audit ---------------------------------------------


def test_ledger_refuses_the_same_notification_twice(session):
    add_terminal(session)
    a = new_alarm()
    session.add(a)
    session.commit()
    key = f"{a.id}:raised:email:ops@example.com"

    def delivery() -> Delivery:
        return Delivery(
            alarm_id=a.id,
            event="raised",
            dedup_key=key,
            channel=DeliveryChannel.EMAIL,
            recipient="ops@example.com",
        )

    session.add(delivery())
    session.commit()
    session.add(delivery())
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()


def test_delivery_retries_then_succeeds_or_dies(session):
    d = Delivery(
        event="digest", dedup_key="k", channel=DeliveryChannel.WEBHOOK, recipient="https://x/y"
    )
    session.add(d)
    session.commit()
    assert (d.status, d.attempts, d.billable) == (DeliveryStatus.QUEUED, 0, True)
    d.mark_failed(T0, "connection refused", retry_in=timedelta(minutes=5))
    assert (d.status, d.next_attempt_at) == (DeliveryStatus.FAILED, T0 + timedelta(minutes=5))
    d.mark_sent(T0 + timedelta(minutes=5))
    assert (d.status, d.attempts, d.next_attempt_at) == (DeliveryStatus.SENT, 2, None)
    with pytest.raises(InvalidTransition):
        d.mark_failed(T0, "late", retry_in=None)
    d2 = Delivery(event="x", dedup_key="k2", channel=DeliveryChannel.EMAIL, recipient="a@b.jp")
    d2.mark_failed(T0, "550 no such user", retry_in=None)
    assert d2.status == DeliveryStatus.DEAD


def test_notification_target_address_must_fit_the_channel():
    ok = NotificationTarget(customer_id=1, channel=DeliveryChannel.EMAIL, address="Ops@X.JP")
    assert ok.address == "ops@x.jp"
    with pytest.raises(InvalidValue):
        NotificationTarget(customer_id=1, channel=DeliveryChannel.WEBHOOK, address="ftp://x")


def test_forwarding_endpoint_tracks_failures(session):
    c = Customer(name="Acme")
    f = ForwardingEndpoint(customer=c, url="https://example.com/in", hmac_secret="k" * 32)
    session.add_all([c, f])
    f.record_attempt(T0, 503)
    f.record_attempt(T0, None, "timeout")
    assert (f.consecutive_failures, f.last_error) == (2, "timeout")
    f.record_attempt(T0, 204)
    session.commit()
    assert (f.consecutive_failures, f.last_success_at, f.last_error) == (0, T0, None)
    with pytest.raises(InvalidValue):
        f.hmac_secret = "short"


def test_audit_entry_keeps_json_details(session):
    session.add(
        AuditEntry(
            actor="alice@example.com",
            action="terminal.config.push",
            object_type="terminal",
            object_id="T0001",
            details={"version": 3, "changed": ["ior.warn"]},
            ip="::1",
        )
    )
    session.commit()
    session.expire_all()
    entry = session.scalar(sa.select(AuditEntry))
    assert entry.details == {"version": 3, "changed": ["ior.warn"]}
    assert entry.at.tzinfo is UTC


def test_foreign_keys_are_enforced_on_sqlite(session):
    session.add(new_alarm())  # terminal T0001 does not exist
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
