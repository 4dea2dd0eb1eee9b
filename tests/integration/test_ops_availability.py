"""Health checks, availability arithmetic, failure and maintenance notices,
on SQLite and a real PostgreSQL."""

from __future__ import annotations

import http.server
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cloud import db
from cloud.models import Delivery, DeliveryChannel, NotificationTarget
from cloud.models.ops import HealthCheck
from cloud.ops import announcements, availability
from cloud.ops.health import Result, Status, check_database, check_http
from cloud.ops.jobs import default_jobs
from cloud.ops.lease import Lease
from cloud.ops.scheduler import Scheduler
from tests.support.ops import context, customer, ops_settings

pytestmark = pytest.mark.integration

JST = ZoneInfo("Asia/Tokyo")
T0 = datetime(2026, 2, 10, 3, 0, tzinfo=UTC)


@pytest.fixture
def session(engine):
    with db.session_factory(engine)() as s:
        yield s


def rows(session, component, start, ups):
    """One row per minute from ``start``: True up, False down, None missing."""
    for i, up in enumerate(ups):
        if up is not None:
            session.add(HealthCheck(component=component, at=start + timedelta(minutes=i), ok=up))
    session.commit()


def test_checks_in_one_minute_fold_into_one_row_that_is_down_if_any_was(session):
    at = T0 + timedelta(seconds=5)
    availability.record(session, [Result("web", True, "HTTP 200", 12)], at)
    availability.record(session, [Result("web", False, "HTTP 503", 40)], at + timedelta(seconds=30))
    availability.record(session, [Result("web", True, "HTTP 200", 8)], at + timedelta(seconds=50))
    session.commit()
    [row] = session.scalars(sa.select(HealthCheck)).all()
    assert (row.at, row.ok, row.detail, row.latency_ms) == (T0, False, "HTTP 503", 40)


def test_component_and_service_minutes(session):
    rows(session, "database", T0, [True] * 10)
    rows(session, "web", T0, [True] * 7 + [False, None, None])
    comps, service = availability.period(
        session, ["database", "web"], T0, T0 + timedelta(minutes=12)
    )
    assert [
        (f.component, f.total_minutes, f.up_minutes, f.down_minutes, f.unknown_minutes)
        for f in comps
    ] == [("database", 12, 10, 0, 2), ("web", 12, 7, 1, 4)]
    # Service: up only when both are up; minutes without any row are unknown.
    assert (service.up_minutes, service.down_minutes, service.unknown_minutes) == (7, 3, 2)
    assert service.percent == Decimal("58.333")  # 7/12, rounded down


def test_a_month_in_jst_counts_unknown_minutes_as_down_and_rounds_down(session):
    feb = datetime(2026, 2, 1, tzinfo=JST).astimezone(UTC)
    minutes = 28 * 24 * 60
    ups: list[bool | None] = [True] * minutes
    for i in range(1000, 1201):
        ups[i] = None  # 201 minutes without evidence (checker down)
    ups[5000] = False
    rows(session, "database", feb, ups)
    # Just outside February in JST: must not count.
    rows(session, "database", feb - timedelta(minutes=1), [False])
    rows(session, "database", feb + timedelta(minutes=minutes), [False])
    figures = availability.monthly(session, date(2026, 2, 14), ["database"], zone=JST)
    [db_fig] = figures.components
    assert (
        db_fig.total_minutes,
        db_fig.up_minutes,
        db_fig.down_minutes,
        db_fig.unknown_minutes,
    ) == (40320, 40118, 1, 201)
    assert db_fig.percent == Decimal("99.499")  # 99.49901... never shown as 99.500
    assert figures.service.percent == Decimal("99.499")
    assert figures.as_dict()["service"]["percent"] == "99.499"
    # The month in progress counts up to now; a future month has no minutes.
    partial = availability.monthly(
        session, date(2026, 2, 1), ["database"], zone=JST, now=feb + timedelta(minutes=900)
    )
    assert partial.service.total_minutes == 900 and partial.service.percent == Decimal("100.000")
    assert (
        availability.monthly(
            session, date(2026, 3, 1), ["database"], zone=JST, now=feb
        ).service.percent
        is None
    )


def test_availability_counts_from_the_first_check_and_the_customers_start(session):
    month = date(2026, 2, 1)
    assert availability.monthly(session, month, ["web"], zone=JST, now=T0).service.percent is None
    # Installed on 10 February: the nine days before are no outage.
    rows(session, "web", T0, [True] * 50 + [False] * 10)
    now = T0 + timedelta(minutes=60)
    figures = availability.monthly(session, month, ["web"], zone=JST, now=now)
    assert (figures.start, figures.service.total_minutes) == (T0, 60)
    assert figures.service.percent == Decimal("83.333")
    # A customer who joined in the last ten minutes saw only the outage.
    joined = availability.monthly(
        session, month, ["web"], zone=JST, now=now, since=T0 + timedelta(minutes=50, seconds=7)
    )
    assert (joined.service.total_minutes, joined.service.percent) == (10, Decimal("0.000"))
    # January was before the service existed: no figure, not 0 %.
    january = availability.monthly(session, date(2026, 1, 1), ["web"], zone=JST, now=now)
    assert january.service.total_minutes == 0 and january.service.percent is None


def test_outage_start_is_the_first_down_minute_after_the_last_up(session):
    rows(session, "broker", T0, [True, False, True, False, False, False])
    now = T0 + timedelta(minutes=6)
    assert availability.outage_start(session, "broker", now) == T0 + timedelta(minutes=3)
    rows(session, "broker", T0 + timedelta(minutes=6), [True])
    assert availability.outage_start(session, "broker", now + timedelta(minutes=1)) is None


def _notices(session, event):
    return session.scalars(
        sa.select(Delivery).where(Delivery.event == event).order_by(Delivery.recipient)
    ).all()


def test_failure_and_recovery_notices_go_once_to_every_active_customer(session):
    a = customer(session, "A社", email="admin@a.example")
    session.add(
        NotificationTarget(
            customer_id=a.id, channel=DeliveryChannel.EMAIL, address="Alerts@A.example"
        )
    )
    session.add(
        NotificationTarget(
            customer_id=a.id, channel=DeliveryChannel.WEBHOOK, address="https://a.example/hook"
        )
    )
    customer(session, "B社", email="admin@b.example")
    customer(session, "解約済", email="gone@c.example", active=False)
    session.commit()
    rows(session, "broker", T0, [True, False, False])
    assert announcements.failure_notices(session, ["broker"], T0 + timedelta(minutes=3), 3) == 0
    rows(session, "broker", T0 + timedelta(minutes=3), [False])
    now = T0 + timedelta(minutes=4)
    assert announcements.failure_notices(session, ["broker"], now, 3) == 3
    assert announcements.failure_notices(session, ["broker"], now + timedelta(minutes=1), 3) == 0
    session.commit()
    sent = _notices(session, "failure")
    assert [d.recipient for d in sent] == ["admin@a.example", "admin@b.example", "alerts@a.example"]
    assert all(not d.billable and d.payload["kind"] == "failure" for d in sent)
    assert sent[0].payload["since"] == (T0 + timedelta(minutes=1)).isoformat()

    rows(session, "broker", T0 + timedelta(minutes=4), [True])
    assert announcements.failure_notices(session, ["broker"], now + timedelta(minutes=2), 3) == 3
    assert announcements.failure_notices(session, ["broker"], now + timedelta(minutes=3), 3) == 0
    session.commit()
    back = _notices(session, "recovery")
    assert {d.payload["until"] for d in back} == {(T0 + timedelta(minutes=4)).isoformat()}

    # A blip shorter than the threshold sends neither notice.
    rows(session, "web", T0, [True, False, True])
    assert announcements.failure_notices(session, ["web"], T0 + timedelta(minutes=3), 3) == 0


def test_maintenance_is_mailed_the_lead_time_ahead_to_the_customers_it_lists(session):
    a = customer(session, "A社", email="admin@a.example")
    customer(session, "B社", email="admin@b.example")
    start = datetime(2026, 3, 20, 1, 0, tzinfo=JST)
    only_a = announcements.announce(
        session,
        title="ブローカー更新",
        body="10分停止します",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        components=["broker"],
        customer_ids=[a.id],
    )
    everyone = announcements.announce(
        session, title="DB保守", starts_at=start, ends_at=start + timedelta(hours=2), lead_hours=24
    )
    session.commit()
    early = start - timedelta(hours=72, minutes=1)
    assert announcements.announce_due(session, early, 72) == 0
    assert announcements.announce_due(session, start - timedelta(hours=72), 72) == 1
    assert announcements.announce_due(session, start - timedelta(hours=30), 72) == 0
    assert announcements.announce_due(session, start - timedelta(hours=24), 72) == 2
    session.commit()
    mails = _notices(session, "maintenance")
    assert sorted((d.recipient, d.payload["title"]) for d in mails) == [
        ("admin@a.example", "DB保守"),
        ("admin@a.example", "ブローカー更新"),
        ("admin@b.example", "DB保守"),
    ]
    session.refresh(only_a)
    session.refresh(everyone)
    assert only_a.notified_at is not None and everyone.notified_at is not None
    assert all(
        not d.billable and d.payload["starts_at"] == start.isoformat()
        for d in mails
        if d.payload["title"] == "DB保守"
    )


class _Web(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_health_job_records_every_minute_and_notices_a_down_web(engine, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    with db.session_factory(engine)() as s:
        customer(s, "A社", email="admin@a.example")
        s.commit()
    ops = ops_settings(tmp_path, failure_notice_after_min=2)
    checks = {
        "database": check_database(engine),
        "web": check_http(url, 2.0),
        "ingest": lambda: Status(True, "idle"),
    }
    clock = [T0]
    sched = Scheduler(
        engine,
        default_jobs(ops),
        Lease(engine, "s", 30, clock=lambda: clock[0]),
        zone=ops.tz,
        clock=lambda: clock[0],
        context=lambda at: context(engine, ops, at, checks=checks),
    )
    try:
        for minute, status in enumerate([200, 404, 500, 500, 500, 200]):
            _Web.status = status
            clock[0] = T0 + timedelta(minutes=minute, seconds=1)
            sched.tick_lease()
            outcome = sched.fire("health")
            assert outcome.ok, outcome.detail
    finally:
        server.shutdown()
        server.server_close()
    with db.session_factory(engine)() as s:
        web = s.scalars(
            sa.select(HealthCheck).where(HealthCheck.component == "web").order_by(HealthCheck.at)
        ).all()
        assert [r.ok for r in web] == [True, True, False, False, False, True]  # 404: serving
        assert web[2].detail == "HTTP 500"
        _, service = availability.period(
            s, ["database", "ingest", "web"], T0, T0 + timedelta(minutes=6)
        )
        assert service.up_minutes == 3 and service.down_minutes == 3
        assert [d.event for d in s.scalars(sa.select(Delivery).order_by(Delivery.id))] == [
            "failure",
            "recovery",
        ]
