"""Builders shared by the alarm and notification tests: a migrated database
with a customer, a terminal whose channels came from a birth, targets and
rules, and protocol frames as the ingest worker hands them to the engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from cloud import db
from cloud.models import (
    AlarmCondition,
    ChannelSpec,
    Customer,
    Delivery,
    DeliveryChannel,
    NotificationTarget,
    Severity,
    Terminal,
    apply_birth,
)
from cloud.notify.settings import NotifySettings, RetryPolicy
from tests.support.head import upgrade_to_head

T0 = datetime(2026, 11, 27, 5, 3, tzinfo=UTC)  # 14:03 JST
BOOT = 3
# The IM-100 / PM-300 / TH-10 layout of protocol vector 001-birth.
CHANNELS = [
    ChannelSpec(0, "io", "mA", "leak", -1),
    ChannelSpec(1, "ior", "mA", "leak", -1),
    ChannelSpec(2, "kw", "kW", "power", -2),
    ChannelSpec(3, "kwh", "kWh", "energy", -1),
    ChannelSpec(4, "v", "V", "voltage", -1),
    ChannelSpec(5, "t", "degC", "temperature", -1),
]


@contextmanager
def database(url: str) -> Iterator[tuple[sa.Engine, Session]]:
    """Bring the new database at ``url`` to head; yield (engine, session); dispose at the end."""
    upgrade_to_head(url)
    engine = db.make_engine(url)
    try:
        with db.session_factory(engine)() as session:
            yield engine, session
    finally:
        engine.dispose()


def world(
    session: Session,
    *,
    tid: str = "T0001",
    language: str = "ja",
    contracted_kw: float | None = None,
) -> Terminal:
    """A customer with one terminal that announced :data:`CHANNELS` at boot 3."""
    customer = Customer(name="Acme 株式会社", language=language, contracted_demand_kw=contracted_kw)
    terminal = Terminal(
        id=tid,
        customer=customer,
        name="第1工場 受電盤",
        site_address="東京都品川区1-2-3",
        last_boot=BOOT,
    )
    session.add(terminal)
    session.flush()
    apply_birth(session, tid, CHANNELS, BOOT, T0)
    session.commit()
    return terminal


def target(
    session: Session,
    terminal: Terminal,
    address: str,
    *,
    per_terminal: bool = False,
    cond: str | None = None,
    min_severity: Severity = Severity.WARNING,
    language: str | None = None,
    recovery: bool = True,
    channel: DeliveryChannel = DeliveryChannel.EMAIL,
) -> NotificationTarget:
    assert terminal.customer_id is not None
    row = NotificationTarget(
        customer_id=terminal.customer_id,
        channel=channel,
        address=address,
        terminal_id=terminal.id if per_terminal else None,
        cond=cond,
        min_severity=min_severity,
        language=language,
        notify_recovery=recovery,
    )
    session.add(row)
    session.commit()
    return row


def leak_rule(session: Session, terminal: Terminal, channel: str = "ior") -> AlarmCondition:
    """The leakage rule the cloud pushed: warn 10 mA, alarm 30 mA."""
    rule = AlarmCondition(
        terminal_id=terminal.id, channel=channel, cond="leak", warn=10.0, alarm=30.0
    )
    session.add(rule)
    session.commit()
    return rule


def frame(kind: str, at: datetime = T0, *, unsynced: bool = False, **fields: Any) -> dict[str, Any]:
    """A decoded frame dict as ``protocol.frames.decode`` returns it."""
    return {
        "type": kind,
        "tid": "T0001",
        "boot": fields.pop("boot", BOOT),
        "seq": fields.pop("seq", 0),  # frame identity: the ingest's business, not the engine's
        "ts": int(at.timestamp()),
        "unsynced": unsynced,
        **fields,
    }


def alarm_frame(
    level: int,
    state: str,
    value: int | None,
    threshold: int | None,
    at: datetime = T0,
    *,
    alias: int | None = 1,
    cond: str = "leak",
    **kw: Any,
) -> dict[str, Any]:
    """An alarm frame; value and threshold are raw counts (ior: 0.1 mA)."""
    return frame(
        "alarm",
        at,
        alias=alias,
        cond=cond,
        level=level,
        state=state,
        value=value,
        threshold=threshold,
        **kw,
    )


def ledger(session: Session) -> list[Delivery]:
    session.expire_all()
    return list(session.scalars(sa.select(Delivery).order_by(Delivery.id)))


def settings_for(port: int, **kw: Any) -> NotifySettings:
    return NotifySettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_timeout_s=5,
        mail_from="alerts@mimamori.example",
        message_id_domain="mimamori.example",
        **kw,
    )


FAST = RetryPolicy(base_s=60, factor=2, max_delay_s=3600, max_attempts=5, lease_s=120)
