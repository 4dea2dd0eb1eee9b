"""Model constraints and types behave the same on SQLite and a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cloud import db
from cloud.models import (
    Alarm,
    Channel,
    ChannelSpec,
    Customer,
    Delivery,
    DeliveryChannel,
    FrameReceipt,
    IngestCounter,
    Severity,
    Terminal,
    apply_birth,
)
from tests.support.head import upgrade_to_head

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
T0 = datetime(2025, 4, 1, 0, 30, tzinfo=UTC)
U32_MAX = 2**32 - 1


@pytest.fixture
def session(db_url):
    upgrade_to_head(db_url)
    engine = db.make_engine(db_url)
    with db.session_factory(engine)() as s:
        s.add(Terminal(id="T0001", customer=Customer(name="Acme")))
        s.commit()
        yield s
    engine.dispose()


def test_aware_datetimes_round_trip_as_utc_and_compare_as_instants(session):
    if session.bind.dialect.name == "postgresql":
        # The server's zone must not matter either.
        session.execute(sa.text("SET TIME ZONE 'America/New_York'"))
    jst = datetime(2025, 4, 1, 9, 30, tzinfo=JST)  # == T0
    session.add(Customer(name="jst", created_at=jst))
    session.add(Customer(name="later", created_at=T0 + timedelta(seconds=1)))
    session.commit()
    session.expire_all()
    got = session.scalar(sa.select(Customer.created_at).where(Customer.name == "jst"))
    assert got == T0 and got.tzinfo is UTC
    at_or_before = session.scalars(
        sa.select(Customer.name).where(
            Customer.created_at <= datetime(2025, 4, 1, 9, 30, tzinfo=JST)
        )
    ).all()
    assert at_or_before == ["jst"]


def test_u32_counters_fit(session):
    t = session.get(Terminal, "T0001")
    t.last_boot = U32_MAX
    t.push_config(U32_MAX, T0)
    session.add(FrameReceipt(terminal_id="T0001", boot=U32_MAX, seq=U32_MAX))
    session.commit()
    session.expire_all()
    assert session.get(Terminal, "T0001").config_pending_version == U32_MAX


def test_frame_receipt_insert_tells_new_from_redelivered(session):
    insert = (postgresql if session.bind.dialect.name == "postgresql" else sqlite).insert
    # RETURNING says portably whether the row went in (rowcount may be -1).
    table = FrameReceipt.__table__
    stmt = insert(table).on_conflict_do_nothing().returning(table.c.seq)
    row = {"terminal_id": "T0001", "boot": 3, "seq": 17, "received_at": T0}
    conn = session.connection()
    assert conn.execute(stmt, row).all() == [(17,)]
    assert conn.execute(stmt, row).all() == []  # QoS 1 redelivery: seen before
    assert conn.execute(stmt, row | {"boot": 4}).all() == [(17,)]  # after a reboot: new
    session.commit()


def test_retired_channels_keep_history_while_current_ones_stay_unique(session):
    birth = [ChannelSpec(0, "io", "mA", "leak", -1), ChannelSpec(1, "ior", "mA", "leak", -1)]
    apply_birth(session, "T0001", birth, boot=1, at=T0)
    apply_birth(session, "T0001", birth[:1], boot=2, at=T0 + timedelta(hours=1))
    apply_birth(session, "T0001", birth, boot=3, at=T0 + timedelta(hours=2))
    session.commit()
    # Three rows for alias 0 now exist, two retired: the unique index is partial.
    assert session.scalar(sa.select(sa.func.count()).where(Channel.alias == 0)) == 3
    session.add(Channel(terminal_id="T0001", alias=1, name="x", kind="k", boot=3, declared_at=T0))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()


@pytest.mark.parametrize("channel", ["ior", None])
def test_one_open_alarm_per_condition_even_for_terminal_level_alarms(session, channel):
    def alarm() -> Alarm:
        return Alarm(
            terminal_id="T0001",
            channel=channel,
            cond="offline" if channel is None else "high",
            severity=Severity.ALARM,
            raised_at=T0,
        )

    first = alarm()
    session.add(first)
    session.commit()
    session.add(alarm())
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
    session.rollback()
    first.clear(T0 + timedelta(minutes=5))
    session.add(alarm())
    session.commit()


def test_foreign_keys_hold(session):
    session.add(IngestCounter(terminal_id="NOPE", day=T0.date()))
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()


def test_enum_columns_refuse_unknown_values(session):
    with pytest.raises(sa.exc.IntegrityError):
        session.execute(
            sa.text(
                "INSERT INTO notification_ledger (event, dedup_key, channel, recipient, language,"
                " status, attempts, billable, created_at) VALUES ('raised', 'k', 'sms', 'x', 'ja',"
                " 'queued', 0, :t, :at)"
            ),
            {"t": True, "at": T0.replace(tzinfo=None)},
        )


def test_ledger_dedup_key_is_unique(session):
    for _ in range(2):
        session.add(
            Delivery(
                event="raised",
                dedup_key="1:raised:a@b.jp",
                channel=DeliveryChannel.EMAIL,
                recipient="a@b.jp",
                payload={"subject": "漏電警報"},
            )
        )
    with pytest.raises(sa.exc.IntegrityError):
        session.commit()
