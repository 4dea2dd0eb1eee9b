"""The operations console (/admin for operators): what it says about the
fleet, the pipeline, the broker, backups and availability, that /metrics
says the same, and the dead-letter requeue."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from cloud.models import (
    AuditEntry,
    Connectivity,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    FrameReceipt,
    ParkedFrame,
    Terminal,
    TerminalStatus,
)
from cloud.models.ops import JobRun
from cloud.ops import availability
from cloud.ops.health import Result
from tests.support.web import csrf_token, login_as, post_form


def metric(client, name, labels=()):
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and tuple(sorted(s.labels.items())) == tuple(labels):
                return s.value
    raise AssertionError(f"{name}{labels} not exported")


def set_up(world, clock):
    """TA1 silent for 20 min (still marked online), TB1 online and fresh; a
    healthy broker with 7 clients; two dead letters; one good backup."""
    now = clock()
    with world.session() as s:
        ta1, tb1 = s.get(Terminal, "TA1"), s.get(Terminal, "TB1")
        ta1.connectivity = tb1.connectivity = Connectivity.ONLINE
        ta1.last_seen_at = now - timedelta(minutes=20)
        tb1.last_seen_at = now - timedelta(seconds=30)
        s.add(Terminal(id="TA2", customer_id=world.ids["customer_a"], status=TerminalStatus.ACTIVE))
        for i in range(30):
            s.add(
                FrameReceipt(
                    terminal_id="TB1", boot=1, seq=i, received_at=now - timedelta(seconds=10 * i)
                )
            )
        s.add(
            ParkedFrame(
                terminal_id="TA1", boot=1, seq=1, topic="mm/v1/TA1/up/data", payload=b"x",
                reason="no_birth", received_at=now,
            )
        )  # fmt: skip
        for i in range(2):
            s.add(
                Delivery(
                    customer_id=world.ids["customer_a"], event="raised", dedup_key=f"dead-{i}",
                    channel=DeliveryChannel.EMAIL, recipient=f"gone{i}@acme.test", payload={},
                    status=DeliveryStatus.DEAD, attempts=8, next_attempt_at=None,
                    last_error="550 mailbox unavailable", created_at=now - timedelta(hours=i + 1),
                )
            )  # fmt: skip
        s.add(
            JobRun(
                job="backup", slot=now.date().isoformat(), holder="s1", status="ok",
                started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=3),
                detail="20260310T000000Z: 99 rows; verified: 1 file checksums, 30 tables match",
            )
        )  # fmt: skip
        availability.record(
            s, [Result("broker", True, "CONNACK 0 (accepted)", 4, {"clients_connected": 7})], now
        )
        s.commit()


def test_operators_land_on_the_console_and_it_agrees_with_metrics(client, world, clock):
    set_up(world, clock)
    login_as(client, "operator")
    html = client.get("/admin").get_data(as_text=True)
    assert "Operations console" in html
    # Fleet: A has TA1 (silent) and TA2 (never connected); B has TB1.
    row_a = re.search(r'data-customer="%d">.*?</tr>' % world.ids["customer_a"], html, re.S)[0]
    assert [int(n) for n in re.findall(r'class="num">(\d+)<', row_a)] == [2, 1, 0, 1, 1]
    silent = re.search(r'id="silent-terminals">.*?</table>', html, re.S)[0]
    assert 'data-terminal="TA1"' in silent and "TB1" not in silent and "20 min" in silent
    assert "Terminals: 1 silent longer than their heartbeat." in html
    # Pipeline, broker, backup, parked frames, dead letters.
    assert "0.10 frames/s (last 5 min, 30 frames)" in html
    assert re.search(r'id="broker-clients">7<', html)
    assert "verified: 1 file checksums" in html
    assert "waiting for its birth frame: 1" in html
    assert "Notifications: 2 gave up (dead letters)." in html
    assert html.count('<tr data-delivery="') == 2
    # /metrics reads the same computation.
    assert metric(client, "mimamori_terminals_silent") == 1
    assert metric(client, "mimamori_terminals", (("connectivity", "online"),)) == 2
    assert metric(client, "mimamori_terminals", (("connectivity", "never"),)) == 1
    assert metric(client, "mimamori_ingest_stored_frames_per_second") == 0.1
    assert metric(client, "mimamori_broker_clients_connected") == 7
    assert metric(client, "mimamori_parked_frames", (("reason", "no_birth"),)) == 1
    assert metric(client, "mimamori_outbox_depth", (("status", "dead"),)) == 2
    assert (
        metric(client, "mimamori_backup_last_success_timestamp_seconds")
        == (clock() - timedelta(hours=3)).timestamp()
    )


def test_a_healthy_service_says_so(client, world, clock):
    now = clock()
    with world.session() as s:
        for t in s.scalars(sa.select(Terminal)):
            t.connectivity, t.last_seen_at = Connectivity.ONLINE, now
        s.add(FrameReceipt(terminal_id="TA1", boot=1, seq=1, received_at=now))
        s.add(
            JobRun(job="backup", slot="x", holder="s", status="ok", started_at=now, finished_at=now)
        )
        s.commit()
    login_as(client, "operator")
    html = client.get("/admin").get_data(as_text=True)
    assert 'data-healthy="true"' in html and "The service is healthy." in html
    # A day without a backup, and the same page says what is wrong.
    clock.advance(27 * 3600)
    login_as(client, "operator")  # the session did not last a day
    html = client.get("/admin").get_data(as_text=True)
    assert 'data-healthy="false"' in html
    assert "Backup: no successful backup in the last 26 hours." in html
    assert "Ingest: 2 terminals online but no frame stored for 97200 s." in html


def test_dead_letters_are_queued_again_once_audited_and_only_by_operators(client, world, clock):
    set_up(world, clock)
    login_as(client, "admin_a")
    token = csrf_token(client, "/")
    assert (
        client.post(
            "/admin/dead-letters/requeue", data={"csrf_token": token, "id": "1"}
        ).status_code
        == 403
    )
    post_form(client, "/", "/logout")
    login_as(client, "operator")
    with world.session() as s:
        ids = s.scalars(sa.select(Delivery.id).where(Delivery.status == DeliveryStatus.DEAD)).all()
    r = post_form(client, "/admin", "/admin/dead-letters/requeue", data={"id": str(ids[0])})
    assert r.status_code == 302
    page = client.get("/admin").get_data(as_text=True)
    assert "1 notifications queued again." in page and page.count('<tr data-delivery="') == 1
    # Asking again for the same one changes nothing: it is no longer dead.
    post_form(client, "/admin", "/admin/dead-letters/requeue", data={"id": str(ids[0])})
    with world.session() as s:
        row = s.get(Delivery, ids[0])
        assert (row.status, row.attempts) == (DeliveryStatus.QUEUED, 0)
        entries = s.scalars(
            sa.select(AuditEntry).where(AuditEntry.action == "notification.requeue")
        ).all()
        assert [e.details for e in entries] == [{"ids": [ids[0]]}]
    post_form(client, "/admin", "/admin/dead-letters/requeue", data={"id": [str(i) for i in ids]})
    assert metric(client, "mimamori_outbox_depth", (("status", "dead"),)) == 0
    assert metric(client, "mimamori_outbox_depth", (("status", "queued"),)) >= 2


def test_installers_keep_their_menu(client, world):
    login_as(client, "installer")
    html = client.get("/admin").get_data(as_text=True)
    assert "Operations console" not in html and "/admin/terminals" in html
