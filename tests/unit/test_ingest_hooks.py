"""Ingest with its real hooks: the alarm engine (cloud.alarms.engine.on_frame)
and data forwarding (cloud.forwarding.enqueue_samples)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.alarms.conditions import sweep_offline
from cloud.ingest.hooks import default_hooks
from cloud.ingest.service import DUPLICATE, STORED, Inbound, IngestService
from cloud.models import (
    Alarm,
    AlarmState,
    Connectivity,
    Delivery,
    ForwardingEndpoint,
    Severity,
    Terminal,
)
from cloud.timeseries import SqlStore
from tests.support import ingest as S


@pytest.fixture
def service(tmp_path: Any, tmp_path_factory: Any) -> Iterator[IngestService]:
    engine = db.make_engine(S.migrated_sqlite(tmp_path, tmp_path_factory.getbasetemp()))
    sessions = db.session_factory(engine)
    with sessions() as s:
        S.seed(s, ["T1"])
    yield IngestService(sessions, SqlStore(engine), default_hooks())
    engine.dispose()


def send(service: IngestService, *frames: dict[str, Any], delay_s: float = 30) -> list[str]:
    at = S.at(frames[0]["ts"] + delay_s)
    result = service.process([Inbound.of_frame(f, at) for f in frames])
    return [o.status for o in result.outcomes]


def alarms(service: IngestService) -> list[tuple[str | None, str, Severity, AlarmState, bool]]:
    with service.sessions() as s:
        rows = s.scalars(sa.select(Alarm).order_by(Alarm.id)).all()
        return [(a.channel, a.cond, a.severity, a.state, a.historical) for a in rows]


def test_alarm_frames_raise_and_clear_once_even_when_redelivered(service: IngestService) -> None:
    raised = S.alarm("T1", 1, 1, alias=1, cond="hi", level=2, state="raised")
    assert send(service, S.birth("T1", 1, 0), raised) == [STORED, STORED]
    assert send(service, raised) == [DUPLICATE]  # QoS 1 redelivery
    assert alarms(service) == [("ior", "hi", Severity.ALARM, AlarmState.RAISED, False)]
    cleared = S.alarm("T1", 1, 2, S.T0 + 60, alias=1, cond="hi", level=2, state="cleared")
    assert send(service, cleared) == [STORED]
    assert alarms(service) == [("ior", "hi", Severity.ALARM, AlarmState.CLEARED, False)]


def test_late_alarm_from_the_outbox_is_historical(service: IngestService) -> None:
    send(service, S.birth("T1", 1, 0))
    late = S.alarm("T1", 1, 1, S.T0, alias=0, cond="hi", level=1)
    assert send(service, late, delay_s=timedelta(hours=2).total_seconds()) == [STORED]
    assert alarms(service) == [("io", "hi", Severity.WARNING, AlarmState.RAISED, True)]


def test_last_will_marks_offline_the_sweep_alarms_and_live_data_clears_it(
    service: IngestService,
) -> None:
    send(service, S.birth("T1", 1, 1))
    send(service, S.death("T1", 1, 0, S.T0 + 100))
    with service.sessions() as s:
        assert s.get(Terminal, "T1").connectivity == Connectivity.OFFLINE
    assert alarms(service) == []  # the alarm waits for the rule's delay
    with service.sessions() as s:
        assert sweep_offline(s, S.at(S.T0 + 30 + 16 * 60)) == 1
    assert alarms(service) == [(None, "offline", Severity.ALARM, AlarmState.RAISED, False)]
    # Back with data and no heartbeat yet: live data is sign enough.
    send(service, S.data("T1", 1, 3, S.T0 + 1200, [[1] * 6]))
    assert alarms(service) == [(None, "offline", Severity.ALARM, AlarmState.CLEARED, False)]
    with service.sessions() as s:
        assert s.get(Terminal, "T1").connectivity == Connectivity.ONLINE


def test_queued_data_does_not_clear_offline(service: IngestService) -> None:
    send(service, S.birth("T1", 1, 1))
    send(service, S.death("T1", 1, 0, S.T0 + 100))
    with service.sessions() as s:
        sweep_offline(s, S.at(S.T0 + 30 + 16 * 60))
    # An hour-old frame from the outbox says nothing about now.
    late = S.data("T1", 1, 3, S.T0 + 200, [[1] * 6])
    assert send(service, late, delay_s=3600) == [STORED]
    assert alarms(service) == [(None, "offline", Severity.ALARM, AlarmState.RAISED, False)]


def test_unsynchronised_clock_raises_clock_until_a_synchronised_heartbeat(
    service: IngestService,
) -> None:
    send(service, S.birth("T1", 1, 0))
    send(service, S.data("T1", 1, 1, S.T0 + 60, [[1] * 6], unsynced=True))
    assert alarms(service) == [(None, "clock", Severity.WARNING, AlarmState.RAISED, False)]
    send(service, S.status("T1", 1, 2, S.T0 + 120))
    assert alarms(service) == [(None, "clock", Severity.WARNING, AlarmState.CLEARED, False)]


def test_synchronised_live_data_clears_clock(service: IngestService) -> None:
    send(service, S.birth("T1", 1, 0))
    send(service, S.data("T1", 1, 1, S.T0 + 60, [[1] * 6], unsynced=True))
    many = [S.data("T1", 1, seq, S.T0 + 60 * seq, [[seq] * 6]) for seq in range(2, 6)]
    assert send(service, *many) == [STORED] * 4
    assert alarms(service) == [(None, "clock", Severity.WARNING, AlarmState.CLEARED, False)]


def test_forwarded_samples_are_queued_once_even_when_frames_are_redelivered(
    service: IngestService,
) -> None:
    with service.sessions() as s:
        customer_id = s.get(Terminal, "T1").customer_id
        s.add(
            ForwardingEndpoint(
                customer_id=customer_id,
                url="https://example.invalid/in",
                hmac_secret="0123456789abcdef0123",
            )
        )
        s.commit()
    term = S.Terminal("T1")
    birth, d1, d2, d3 = term.birth(), term.data(), term.data(), term.data()
    assert send(service, birth, d1, d2) == [STORED, STORED, STORED]
    assert send(service, d2, d3) == [DUPLICATE, STORED]
    with service.sessions() as s:
        rows = s.scalars(sa.select(Delivery).where(Delivery.event == "forward")).all()
    records = [r for row in rows for r in row.payload["records"]]
    assert len(rows) == 2  # one per terminal and batch
    assert len(records) == 3 * len(S.CHANNELS)  # every sample once, the repeat not again


def test_worker_options_never_show_the_password():
    from cloud.ingest.worker import WorkerOptions

    options = WorkerOptions(password="s3cret-pw")
    assert "s3cret-pw" not in repr(options) and "s3cret-pw" not in str(options)
