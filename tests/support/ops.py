"""Fixtures and data builders for the operations tests (``cloud.ops``).

Fixtures (registered in ``tests/conftest.py``, so a test just names them):
``migrated`` is the URL of a fresh database (SQLite and PostgreSQL, through
``db_url``) at head (:func:`tests.support.head.upgrade_to_head`); ``engine``
an engine on it, disposed after.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cloud import db
from cloud.config import Settings
from cloud.models import (
    Alarm,
    AlarmState,
    AuditEntry,
    ChannelSpec,
    Customer,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    NotificationTarget,
    Role,
    Severity,
    Terminal,
    User,
    apply_birth,
)
from cloud.ops.context import Context
from cloud.ops.settings import OpsSettings
from cloud.timeseries import Point, SqlStore, TimeSeriesStore
from tests.support.head import upgrade_to_head

_keys = itertools.count(1)


@pytest.fixture
def migrated(db_url: str) -> str:
    upgrade_to_head(db_url)
    return db_url


@pytest.fixture
def engine(migrated: str) -> Iterator[Engine]:
    engine = db.make_engine(migrated)
    yield engine
    engine.dispose()


def ops_settings(tmp: Path, **overrides: Any) -> OpsSettings:
    """Settings whose directories all live under ``tmp``."""
    values: dict[str, Any] = {
        "backup_dir": str(tmp / "backups"),
        "log_dir": str(tmp / "logs"),
        "archive_dir": str(tmp / "archive"),
        "reports_dir": str(tmp / "reports"),
    }
    values.update(overrides)
    return OpsSettings(**values)


def context(
    engine: Engine,
    ops: OpsSettings,
    now: datetime,
    *,
    store: TimeSeriesStore | None = None,
    checks: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Context:
    """A job context on ``engine`` (SQL time series unless ``store`` is given)."""
    if settings is None:
        settings = Settings(
            database_url=engine.url.render_as_string(hide_password=False), retention_days=0
        )
    return Context(
        engine=engine,
        sessions=db.session_factory(engine),
        settings=settings,
        ops=ops,
        store=store if store is not None else SqlStore(engine),
        checks=checks or {},
        now=now,
    )


def customer(
    session: Session,
    name: str = "株式会社テスト",
    *,
    email: str | None = None,
    **kw: Any,
) -> Customer:
    c = Customer(name=name, **kw)
    session.add(c)
    session.flush()
    if email:
        session.add(
            User(email=email, password_hash="x", role=Role.CUSTOMER_ADMIN, customer_id=c.id)
        )
        session.flush()
    return c


def terminal(
    session: Session,
    owner: Customer,
    tid: str,
    *,
    registered: date | None,
    start: date | None = None,
    end: date | None = None,
    notice: date | None = None,
    name: str = "",
    kinds: tuple[str, ...] = (),
) -> Terminal:
    """A terminal of ``owner``; ``kinds``: channels of these kinds wired
    (declared by a birth long before any month a test bills)."""
    t = Terminal(
        id=tid,
        customer_id=owner.id,
        name=name,
        registered_on=registered,
        contract_start=start,
        contract_end=end,
        cancellation_notice_on=notice,
    )
    session.add(t)
    session.flush()
    if kinds:
        specs = [ChannelSpec(i, f"{k}{i}", "", k, 0) for i, k in enumerate(kinds)]
        apply_birth(session, tid, specs, boot=1, at=datetime(2020, 1, 1, tzinfo=UTC))
    return t


def delivery(
    session: Session,
    owner: Customer,
    *,
    sent_at: datetime | None,
    status: DeliveryStatus = DeliveryStatus.SENT,
    billable: bool = True,
    event: str = "raised",
) -> Delivery:
    d = Delivery(
        customer_id=owner.id,
        event=event,
        dedup_key=f"test:{next(_keys)}",
        channel=DeliveryChannel.EMAIL,
        recipient="ops@example.com",
        payload={},
        status=status,
        billable=billable,
        sent_at=sent_at,
        created_at=sent_at or datetime(2026, 1, 1, tzinfo=UTC),
    )
    session.add(d)
    session.flush()
    return d


def populate(session: Session, store: TimeSeriesStore, *, at: datetime) -> None:
    """A small but varied dataset: every kind of row the service writes."""
    acme = customer(
        session, "株式会社みまもり", email="admin@example.com", contracted_demand_kw=120.5
    )
    t1 = terminal(session, acme, "T0001", registered=date(2026, 1, 10), name="第1受電室")
    terminal(session, acme, "T0002", registered=date(2026, 2, 1), notice=date(2026, 3, 16))
    apply_birth(
        session,
        t1.id,
        [ChannelSpec(0, "ior", "mA", "leak", -1), ChannelSpec(1, "kw", "kW", "power", -2)],
        boot=1,
        at=at,
    )
    session.add(
        NotificationTarget(
            customer_id=acme.id, channel=DeliveryChannel.EMAIL, address="alerts@example.com"
        )
    )
    alarm = Alarm(
        terminal_id=t1.id,
        channel="ior",
        cond="ior_high",
        severity=Severity.ALARM,
        state=AlarmState.CLEARED,
        raised_at=at,
        cleared_at=at + timedelta(minutes=5),
        value=52.5,
        threshold=50.0,
    )
    session.add(alarm)
    session.flush()
    delivery(session, acme, sent_at=at + timedelta(seconds=3))
    session.add(
        AuditEntry(
            at=at,
            actor="admin@example.com",
            customer_id=acme.id,
            action="terminal.config.push",
            object_type="terminal",
            object_id=t1.id,
            details={"version": 3, "名前": "値"},
            ip="::1",
        )
    )
    session.commit()
    base = int(at.timestamp())
    store.write(
        [Point("T0001", "ior", base + 60 * i, 0.1 * i, 0, i % 7 == 0) for i in range(300)]
        + [Point("T0001", "kw", base + 60 * i, 80.0 + (i % 30) / 3.0) for i in range(300)]
    )


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.text(f'SELECT count(*) FROM "{table}"')) or 0)
