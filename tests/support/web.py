"""Helpers for testing the web site: a migrated database with two customers,
an app wired to recording publisher/mailer and a settable clock, CSRF-aware
form posting, and a real WSGI server in a thread for browser tests.

Everything is real except the clock (so throttling tests need no sleeping)
and the two outbound edges (MQTT publish, reset mail), which are recorded;
``tests/integration/test_web_publisher.py`` checks the paho publisher
against a real broker.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session
from werkzeug.serving import BaseWSGIServer, make_server

from cloud import db
from cloud.app import create_app
from cloud.broker.sealing import generate_keypair
from cloud.config import Settings
from cloud.models import (
    Alarm,
    AlarmCondition,
    AlarmState,
    ChannelSpec,
    Customer,
    Delivery,
    DeliveryChannel,
    DeliveryStatus,
    ForwardingEndpoint,
    IngestCounter,
    NotificationTarget,
    Role,
    Severity,
    Terminal,
    User,
    apply_birth,
)
from cloud.notify.netguard import AddressPolicy
from cloud.services.mailer import RecordingMailer
from cloud.services.passwords import Passwords
from cloud.services.publisher import RecordingPublisher
from cloud.timeseries import Point, SqlStore
from edge import config as edge_config
from edge import profiles

PASSWORD = "correct horse battery"
# The staff of the test world log in with two factors (their roles require
# it); these are their TOTP secrets (test data, base32).
TOTP_SECRETS = {
    "operator": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "installer": "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA",
}
# Cheap but real argon2id parameters: tests hash dozens of passwords.
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 8192, "argon2_parallelism": 1}
T0 = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # 12:00 JST
# Terminal TA1's site file as the installer writes it: its channels are what
# the terminal's birth frame announces (edge/config.py assigns the names).
SITE_A = {
    "terminal_id": "TA1",
    "broker": {"host": "127.0.0.1", "port": 1883, "tls": False},
    "credentials": {"username": "TA1", "password": "not-used-here"},
    "wiring": [
        {"unit": 1, "profile": "IM-100", "name": "leak1"},
        {"unit": 2, "profile": "PM-300", "name": "pm1"},
        {"unit": 3, "profile": "TH-10", "name": "th1"},
    ],
}
SAMPLED_A = ("leak1.ior", "pm1.kw", "th1.t")


def site_channels(site: dict[str, Any]) -> list[ChannelSpec]:
    """The birth-frame channels of a site file (names, units, kinds, exponents)."""
    normalized = edge_config.validate_site(site)
    table = profiles.profile_table([])
    specs = []
    for alias, name, kind, device, point in edge_config.channels(normalized):
        model = normalized["wiring"][device]["profile"]
        p = next(q for q in table[model]["points"] if q["name"] == point)
        specs.append(ChannelSpec(alias, name, p["unit"], kind, p["exp"]))
    return specs


def site_devices(site: dict[str, Any]) -> list[dict[str, str]]:
    """The birth-frame devices of a site file: each device's profile and its status."""
    table = profiles.profile_table([])
    return [
        {"name": d["name"], "model": d["profile"], "status": table[d["profile"]]["status"]}
        for d in edge_config.validate_site(site)["wiring"]
    ]


CHANNELS_A = site_channels(SITE_A)
DEVICES_A = site_devices(SITE_A)  # IM-100 reference, PM-300 and TH-10 test devices


class Clock:
    """A settable 'now' for the app (aware UTC)."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def migrated_copy(template: Path, directory: Path) -> str:
    """A fresh database (copy of a migrated template); returns its URL."""
    path = directory / "web.sqlite3"
    shutil.copy(template, path)
    return f"sqlite:///{path}"


def migrate_template(directory: Path) -> Path:
    path = directory / "template.sqlite3"
    db.upgrade(f"sqlite:///{path}")
    return path


@dataclass
class World:
    """Two customers (A has data, B is the stranger), users of every role."""

    url: str
    engine: Any
    store: SqlStore
    ids: dict[str, Any] = field(default_factory=dict)

    def session(self) -> Session:
        return db.session_factory(self.engine)()


def build_world(url: str, now: datetime = T0, samples: bool = True) -> World:
    engine = db.make_engine(url)
    store = SqlStore(engine)
    world = World(url, engine, store)
    hasher = Passwords(1, 8192, 1, 10)
    pw = hasher.hash(PASSWORD)
    with world.session() as s:
        a = Customer(name="Acme Denki", timezone="Asia/Tokyo", language="ja")
        b = Customer(name="Beta Kogyo", timezone="Asia/Tokyo", language="en")
        s.add_all([a, b])
        s.flush()
        users = {
            "operator": User(
                email="op@mimamori.test",
                password_hash=pw,
                role=Role.OPERATOR,
                language="en",
                totp_secret=TOTP_SECRETS["operator"],
                totp_enabled_at=now - timedelta(days=30),
            ),
            "installer": User(
                email="inst@mimamori.test",
                password_hash=pw,
                role=Role.INSTALLER,
                language="en",
                totp_secret=TOTP_SECRETS["installer"],
                totp_enabled_at=now - timedelta(days=30),
            ),
            "admin_a": User(
                email="admin@acme.test",
                password_hash=pw,
                role=Role.CUSTOMER_ADMIN,
                customer_id=a.id,
                language="en",
            ),
            "viewer_a": User(
                email="viewer@acme.test",
                password_hash=pw,
                role=Role.CUSTOMER_VIEWER,
                customer_id=a.id,
                language="en",
            ),
            "admin_b": User(
                email="admin@beta.test",
                password_hash=pw,
                role=Role.CUSTOMER_ADMIN,
                customer_id=b.id,
                language="en",
            ),
        }
        s.add_all(users.values())
        ta = Terminal(
            id="TA1",
            customer_id=a.id,
            name="Sub A",
            site_address="Tokyo",
            contract_start=(now - timedelta(days=30)).date(),
            devices=DEVICES_A,
        )
        # TB1's firmware predates the birth's devices: it never said.
        tb = Terminal(id="TB1", customer_id=b.id, name="Sub B")
        s.add_all([ta, tb])
        s.flush()
        apply_birth(s, "TA1", CHANNELS_A, boot=1, at=now - timedelta(days=10))
        apply_birth(
            s,
            "TB1",
            [ChannelSpec(0, "leak1.ior", "mA", "leak", -1)],
            boot=1,
            at=now - timedelta(days=10),
        )
        rule = AlarmCondition(
            terminal_id="TA1",
            channel="leak1.ior",
            cond="leak",
            warn=30.0,
            alarm=50.0,
            hysteresis=2.0,
            on_delay_s=60,
            off_delay_s=60,
        )
        s.add(rule)
        alarm_a = Alarm(
            terminal_id="TA1",
            channel="leak1.ior",
            cond="leak",
            severity=Severity.WARNING,
            state=AlarmState.RAISED,
            raised_at=now - timedelta(hours=1),
            value=31.5,
            threshold=30.0,
        )
        alarm_b = Alarm(
            terminal_id="TB1",
            channel="leak1.ior",
            cond="leak",
            severity=Severity.ALARM,
            state=AlarmState.RAISED,
            raised_at=now - timedelta(hours=2),
            value=55.0,
            threshold=50.0,
        )
        s.add_all([alarm_a, alarm_b])
        s.flush()
        target_a = NotificationTarget(
            customer_id=a.id, channel=DeliveryChannel.EMAIL, address="duty@acme.test"
        )
        target_b = NotificationTarget(
            customer_id=b.id, channel=DeliveryChannel.EMAIL, address="duty@beta.test"
        )
        s.add_all([target_a, target_b])
        s.flush()
        s.add(
            Delivery(
                alarm_id=alarm_a.id,
                customer_id=a.id,
                target_id=target_a.id,
                event="raised",
                dedup_key=f"alarm:{alarm_a.id}:raised:{target_a.id}",
                channel=DeliveryChannel.EMAIL,
                recipient="duty@acme.test",
                payload={},
                status=DeliveryStatus.SENT,
                attempts=1,
                sent_at=now - timedelta(minutes=59),
                created_at=now - timedelta(hours=1),
            )
        )
        ep_a = ForwardingEndpoint(
            customer_id=a.id,
            url="https://acme.test/senml",
            hmac_secret="a" * 32,
            name="Acme server",
        )
        ep_b = ForwardingEndpoint(
            customer_id=b.id,
            url="https://beta.test/senml",
            hmac_secret="b" * 32,
            name="Beta server",
        )
        s.add_all([ep_a, ep_b])
        s.commit()
        world.ids = {
            "customer_a": a.id,
            "customer_b": b.id,
            **{k: u.id for k, u in users.items()},
            "alarm_a": alarm_a.id,
            "alarm_b": alarm_b.id,
            "rule_a": rule.id,
            "target_a": target_a.id,
            "target_b": target_b.id,
            "endpoint_a": ep_a.id,
            "endpoint_b": ep_b.id,
        }
    if samples:
        for tid, hours, channels in (("TA1", 48, SAMPLED_A), ("TB1", 2, ("leak1.ior",))):
            with world.session() as s:
                write_samples(store, s, tid, now, hours=hours, channels=channels)
                s.commit()
    return world


def write_samples(
    store: SqlStore,
    session: Session,
    terminal: str,
    end: datetime,
    *,
    hours: int,
    step_s: int = 60,
    channels: tuple[str, ...] = SAMPLED_A,
) -> int:
    """One-minute samples for ``hours`` before ``end`` (a visible daily shape),
    counted per UTC day as the ingest counts them (for completeness)."""
    stop = int(end.timestamp())
    points = []
    per_day: Counter[Any] = Counter()
    for ts in range(stop - hours * 3600, stop, step_s):
        phase = (ts % 86400) / 86400
        for i, ch in enumerate(channels):
            points.append(Point(terminal, ch, ts, round(10 + 5 * i + 3 * phase, 2)))
            per_day[datetime.fromtimestamp(ts, UTC).date()] += 1
    written = store.write(points)  # before the session takes SQLite's write lock
    for day, n in per_day.items():
        row = session.get(IngestCounter, (terminal, day))
        if row is None:
            session.add(
                IngestCounter(
                    terminal_id=terminal,
                    day=day,
                    frames=0,
                    samples=n,
                    duplicates=0,
                    historical=0,
                    rejected=0,
                )
            )
        else:
            row.samples += n
    return written


# One sealing key pair for the test run: apps seal provisioned passwords with
# the public key, broker reconcilers in tests open them with the private one.
SEAL_PUBLIC_KEY, SEAL_PRIVATE_KEY = generate_keypair()


def make_app(world: World, clock: Callable[[], datetime] | None = None, **overrides: Any) -> Flask:
    settings = Settings(database_url=world.url)
    options: dict[str, Any] = {
        # A production configuration: a real key and the site's own URL.
        "secret_key": "Hb4Tq9Wm2Yx7Ks1Rv5Nd8Lc3Pf6Zg0Ja4Uo7Ei2",
        "site_url": "http://localhost",
        "broker_seal_key": SEAL_PUBLIC_KEY,
        "cookie_secure": False,
        "engine": world.engine,
        "store": world.store,
        "publisher": RecordingPublisher(),
        "mailer": RecordingMailer(),
        "clock": clock or Clock(),
        # The operator allows the test site's own receivers by name (they do
        # not resolve here); everything else must be public.
        "addresses": AddressPolicy("hooks.acme.test, bms.acme.test"),
        "TESTING": True,
        **FAST_ARGON2,
    }
    options.update(overrides)
    return create_app(settings, **options)


_TOKEN = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on ``path`` (as a browser would read it)."""
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    match = _TOKEN.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def post_form(
    client: FlaskClient,
    page: str,
    action: str | None = None,
    data: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Submit a form found on ``page`` to ``action`` (default: ``page``) with its token."""
    token = csrf_token(client, page)
    return client.post(action or page, data={"csrf_token": token, **(data or {})}, **kwargs)


def login(client: FlaskClient, email: str, password: str = PASSWORD, **kwargs: Any) -> Any:
    return post_form(client, "/login", data={"email": email, "password": password}, **kwargs)


def sent_mail(app: Any) -> list[Any]:
    """What the site mailed (reset links are sent in the background: wait for them)."""
    assert app.extensions["mimamori_reset_mails"].join(10), "reset mails still queued"
    return list(app.extensions["mimamori_mailer"].sent)


class LiveServer:
    """The app on a real threaded WSGI server on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self._thread.join(10)
        self.server.server_close()


EMAILS = {
    "operator": "op@mimamori.test",
    "installer": "inst@mimamori.test",
    "admin_a": "admin@acme.test",
    "viewer_a": "viewer@acme.test",
    "admin_b": "admin@beta.test",
}


def login_as(client: FlaskClient, who: str) -> FlaskClient:
    """``client`` logged in as ``who`` (with the code of the second step for staff)."""
    response = login(client, EMAILS[who])
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    if who in TOTP_SECRETS:
        assert response.headers["Location"].endswith("/login/code"), response.headers
        web = client.application.extensions["mimamori"]
        code = totp_code(web.engine, who, web.clock())
        response = post_form(client, "/login/code", data={"code": code})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return client


def submit_login(page: Any, base: str, who: str, world: World | None = None) -> None:
    """Log ``who`` in on a Playwright ``page`` as a person does: the login
    form, then for staff (``world`` needed) the code page with the code their
    authenticator shows now. Returns once the code page is left behind."""
    page.goto(f"{base}/login")
    page.fill("input[name=email]", EMAILS[who])
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit].primary")
    if who in TOTP_SECRETS:
        assert world is not None, "staff log in with a code: pass the world"
        page.wait_for_url(f"{base}/login/code")
        page.fill("input[name=code]", totp_code(world.engine, who, datetime.now(UTC)))
        page.click("button[type=submit].primary")
        page.wait_for_url(lambda url: "/login" not in url)


def page_width(page: Any) -> int:
    """The width the laid-out page takes (``scrollWidth``), once the page has
    loaded: before its stylesheet arrives a page is laid out unstyled, wider
    than any screen (seen on a loaded machine). A page wider than the
    viewport scrolls sideways."""
    page.wait_for_load_state("load")
    return int(page.evaluate("document.documentElement.scrollWidth"))


def totp_code(engine: Any, who: str, at: datetime) -> str:
    """The current code of ``who``'s authenticator at ``at``.

    Tests log the same person in many times within one 30 s step, which a
    real person cannot: the code is good once (the replay rule has its own
    tests in tests/unit/test_web_twofactor.py), so the replay mark is
    cleared first.
    """
    with db.session_factory(engine)() as s:
        user = s.scalars(sa.select(User).where(User.email == EMAILS[who])).one()
        user.totp_last_step = None
        s.commit()
    return str(pyotp.TOTP(TOTP_SECRETS[who]).at(at))
