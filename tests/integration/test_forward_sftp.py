"""File forwarding by SFTP against a real OpenSSH server started by the test:
hourly CSV files per terminal, delivered once each (an attempt whose outcome
was lost does not write the file again), the host key pinned, the site's own
key, the address guard; SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from cloud.models import (
    Channel,
    ChannelLabel,
    Delivery,
    DeliveryStatus,
    ForwardingEndpoint,
)
from cloud.notify import files, outbox, sftp
from cloud.notify.settings import RetryPolicy
from cloud.timeseries import Point, SqlStore
from tests.support.notify import T0, database, settings_for, world
from tests.support.sshd import SshServer, host_keypair

pytestmark = pytest.mark.integration

POLICY = RetryPolicy(base_s=30, factor=2, max_delay_s=600, max_attempts=3, lease_s=60)
# The server listens on loopback: allowed here explicitly, as an operator would.
ALLOWED = settings_for(1, webhook_allow="127.0.0.1/32", file_timeout_s=20)
GRACE = timedelta(minutes=10)
HOUR = timedelta(hours=1)
START = T0.replace(minute=0)  # 14:00 JST


@pytest.fixture
def env(db_url, tmp_path):
    with database(db_url) as (engine, session):
        terminal = world(session)
        session.add(ChannelLabel(terminal_id=terminal.id, channel="ior", display_name="主幹 漏電"))
        # A contact input, named with its two states.
        session.add(
            Channel(
                terminal_id=terminal.id, alias=6, name="di1", kind="contact", boot=3, declared_at=T0
            )
        )
        session.add(
            ChannelLabel(
                terminal_id=terminal.id,
                channel="di1",
                display_name="受電遮断器",
                state_off="切",
                state_on="入",
            )
        )
        session.commit()
        store = SqlStore(engine)
        store.write(
            [Point(terminal.id, "ior", START + timedelta(minutes=m), 1.5 + m) for m in (0, 30)]
            + [Point(terminal.id, "t", START + timedelta(minutes=5), 21.25)]
            + [
                Point(terminal.id, "di1", START + timedelta(minutes=m), v)
                for m, v in ((0, 1), (40, 0))
            ]
            + [Point(terminal.id, "ior", START + HOUR, 9.0)]  # the next hour's
        )
        private, public = sftp.new_key("mimamori-fwd-test")
        with SshServer(tmp_path / "ssh", public) as server:
            endpoint = ForwardingEndpoint(
                customer_id=terminal.customer_id,
                kind="sftp",
                url=f"sftp://{server.user}@127.0.0.1:{server.port}{server.directory}",
                hmac_secret="unused-for-sftp-0123456789",
                host_key=sftp.parse_host_key(server.host_key),
                ssh_key=private,
                file_period="hourly",
                file_scope="terminal",
                file_timezone="Asia/Tokyo",
                files_from=START,
            )
            session.add(endpoint)
            session.commit()
            yield session, store, endpoint, server


def deliver(session, store, at, settings=ALLOWED):
    return outbox.run_once(session, at, settings, POLICY, store=store)


def test_an_hour_of_data_arrives_once_as_a_csv_file(env):
    session, store, endpoint, server = env
    assert files.queue_due(session, START + HOUR + GRACE - timedelta(seconds=1), GRACE) == 0
    assert files.queue_due(session, START + HOUR + GRACE, GRACE) == 1
    session.commit()
    assert files.queue_due(session, START + HOUR + GRACE, GRACE) == 0  # once per period
    assert deliver(session, store, START + HOUR + GRACE).sent == 1

    name = "mimamori_T0001_20261127T1400+0900.csv"
    assert sorted(p.name for p in server.directory.iterdir()) == [name]  # no .part left
    raw = (server.directory / name).read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
    assert rows[0] == list(files.HEADER)
    plant = ("T0001", "第1工場 受電盤")
    assert [tuple(r) for r in rows[1:]] == [
        ("2026-11-27T14:00:00+09:00", *plant, "di1", "受電遮断器", "1", "", "入"),
        ("2026-11-27T14:00:00+09:00", *plant, "ior", "主幹 漏電", "1.5", "mA", ""),
        ("2026-11-27T14:05:00+09:00", *plant, "t", "t", "21.25", "degC", ""),
        ("2026-11-27T14:30:00+09:00", *plant, "ior", "主幹 漏電", "31.5", "mA", ""),
        ("2026-11-27T14:40:00+09:00", *plant, "di1", "受電遮断器", "0", "", "切"),
    ]
    assert raw.endswith(b"\r\n")
    session.refresh(endpoint)
    assert endpoint.last_success_at is not None and endpoint.consecutive_failures == 0

    # The outcome of that upload is lost (say the worker died after it):
    # the row is sent again, and the file already there is left alone.
    (server.directory / name).write_bytes(b"kept as it was")
    session.execute(
        sa.update(Delivery).values(status=DeliveryStatus.QUEUED, next_attempt_at=START, attempts=0)
    )
    session.commit()
    assert deliver(session, store, START + 2 * HOUR).sent == 1
    assert (server.directory / name).read_bytes() == b"kept as it was"
    assert sorted(p.name for p in server.directory.iterdir()) == [name]


def test_a_server_with_another_host_key_gets_nothing(env, tmp_path):
    session, store, endpoint, server = env
    endpoint.host_key = sftp.parse_host_key(host_keypair(tmp_path / "other"))
    session.commit()
    files.queue_due(session, START + HOUR + GRACE, GRACE)
    session.commit()
    stats = deliver(session, store, START + HOUR + GRACE)
    assert stats.dead == 1
    (row,) = session.scalars(sa.select(Delivery)).all()
    assert "is not the pinned one" in row.last_error and "SHA256:" in row.last_error
    assert list(server.directory.iterdir()) == []


def test_a_key_the_customer_has_not_installed_is_retried(env):
    session, store, endpoint, server = env
    endpoint.ssh_key, _public = sftp.new_key("not installed")
    session.commit()
    files.queue_due(session, START + HOUR + GRACE, GRACE)
    session.commit()
    assert deliver(session, store, START + HOUR + GRACE).retried == 1
    (row,) = session.scalars(sa.select(Delivery)).all()
    assert row.last_error == "the server refused the endpoint's key"
    assert list(server.directory.iterdir()) == []


def test_loopback_is_refused_unless_the_operator_allows_it(env):
    session, store, _endpoint, server = env
    files.queue_due(session, START + HOUR + GRACE, GRACE)
    session.commit()
    guarded = dataclasses.replace(ALLOWED, webhook_allow="")
    assert deliver(session, store, START + HOUR + GRACE, guarded).retried == 1
    (row,) = session.scalars(sa.select(Delivery)).all()
    assert row.last_error == "destination not found or not allowed"
    assert list(server.directory.iterdir()) == []
