"""The demo's data: one customer, two logins, a fleet of terminals, thresholds, targets.

Everything is plain values in, rows out; the launcher (``cloud.demo``) calls
:func:`seed` on a freshly migrated database. Passwords (people and terminals)
are generated per run by :func:`new_credentials` and only ever printed to the
operator's terminal and written to the run's data directory: the repository
holds no secret, not even a demo one.

The terminals, their wiring and their thresholds come from the fleet
scenario (``firmware_sim/scenarios/demo.toml``): its cloud part is what
every terminal starts with, so the same rules become ``AlarmCondition`` rows
(what the web shows and the alarm engine reads) and the config is recorded
as pushed; the terminals' birth frames report that version and the ingest
marks it applied, as after a save in the web site.

"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy.orm import Session

from cloud.broker.passwd import new_secret
from cloud.broker.sealing import generate_keypair
from cloud.models import (
    AlarmCondition,
    AuditEntry,
    ChannelLabel,
    Customer,
    DeliveryChannel,
    ForwardingEndpoint,
    MaintenanceWindow,
    NotificationTarget,
    Role,
    Severity,
    Terminal,
    User,
)
from cloud.notify import files
from cloud.services.credentials import set_mqtt_password

CUSTOMER_NAME = "デモ電機株式会社"
CUSTOMER_EMAIL = "demo@customer.example"
OPERATOR_EMAIL = "operator@mimamori.example"
# Where alarm mail goes; the SMTP sink accepts any address, nothing leaves the machine.
TARGETS = (
    ("facility@customer.example", Severity.WARNING),
    ("manager@customer.example", Severity.ALARM),
)
PASSWORD_CHARS = 16
BREAKER_TARGET = "electrician@customer.example"
MAINTENANCE_TERMINAL = 15  # the scenario's terminal whose link drops
CHAT_TOPIC = "demo-alarms"
SFTP_USER = "demo"
SFTP_DIRECTORY = "/incoming"


@dataclass(frozen=True)
class FileServer:
    """The demo's SFTP server (:mod:`cloud.demo.sftpsink`) as an endpoint sees it."""

    host: str
    port: int
    host_key: str  # "ssh-ed25519 AAAA...", pinned
    ssh_key: str  # the endpoint's private key (OpenSSH); its public half is authorized

    @property
    def url(self) -> str:
        return f"sftp://{SFTP_USER}@{self.host}:{self.port}{SFTP_DIRECTORY}"


@dataclass(frozen=True)
class Credentials:
    """This run's secrets: people's logins and each terminal's MQTT password."""

    customer_password: str
    operator_password: str
    # The operator's authenticator secret (operators log in with two factors;
    # the demo enrols the operator so the banner can say how to get codes).
    operator_totp: str = ""
    terminals: dict[str, str] = field(default_factory=dict)
    service: dict[str, str] = field(default_factory=dict)  # broker service accounts
    broker_admin: str = ""  # the reconciler's account in the broker
    # Sealing key pair: the web seals new terminal passwords for the reconciler.
    seal_public: str = ""
    seal_private: str = field(default="", repr=False)


# What the demo customer calls the channels of the demo wiring
# (channel, display name, state 0, state 1, key channel).
DEMO_LABELS = (
    ("leak.ior", "絶縁 Ior", "", "", True),
    ("power.kw", "受電電力", "", "", True),
    ("room.t", "室温", "", "", True),
    ("di.di1", "受電遮断器", "切", "入", True),
    ("di.di2", "非常用発電機", "停止", "運転", False),
    ("di.di3", "変圧器温度", "正常", "異常", False),
)


def new_credentials(tids: list[str]) -> Credentials:
    """Fresh random passwords for terminals ``tids``, two logins and the services."""

    def pw() -> str:
        return secrets.token_urlsafe(PASSWORD_CHARS)[:PASSWORD_CHARS]

    public, private = generate_keypair()
    return Credentials(
        customer_password=pw(),
        operator_password=pw(),
        operator_totp=pyotp.random_base32(),
        terminals={tid: pw() for tid in tids},
        service={"ingest": pw(), "web": pw(), "monitor": pw()},
        broker_admin=new_secret(),
        seal_public=public,
        seal_private=private,
    )


def rule_of(tid: str, threshold: dict[str, Any]) -> AlarmCondition:
    """The cloud's row for one ``thresholds`` entry of a cloud config (edge/config.py)."""
    return AlarmCondition(
        terminal_id=tid,
        channel=threshold["channel"],
        cond=threshold["cond"],
        warn=threshold.get("warn"),
        alarm=threshold.get("alarm"),
        hysteresis=threshold.get("hyst") or 0.0,
        on_delay_s=threshold.get("on_delay") or 0,
        off_delay_s=threshold.get("off_delay") or 0,
        count=threshold.get("count"),
        window_s=threshold.get("window"),
    )


def drop_none(value: Any) -> Any:
    """A config as the web stores it: None values left out (the terminal fills them in)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def seed(
    session: Session,
    creds: Credentials,
    password_hash: Any,
    config: dict[str, Any] | None,
    now: datetime | None = None,
    *,
    chat: str = "",
    file_server: FileServer | None = None,
) -> Customer:
    """Add the demo customer, users, terminals, rules, targets; commit.

    ``chat``: an Apprise address (the demo's chat receiver) that hears of
    every warning and alarm and their recoveries ("": no chat target).
    ``file_server``: the SFTP server an hourly CSV forwarding endpoint (one
    file per hour for the whole customer, JST) delivers to, its host key
    pinned; its first period is the hour before ``now``, so a file (of that
    hour, with no samples: the fleet starts now) lands within minutes, the
    first one with data ten minutes after the first full hour.

    ``password_hash(password) -> str`` hashes people's passwords the way the
    web site checks them (argon2id). ``config`` is the cloud config every
    terminal starts with (the scenario's; None: none); its thresholds become
    rules and it is recorded as pushed, pending the terminals' birth.
    """
    now = now or datetime.now(UTC)
    today = now.date()
    customer = Customer(name=CUSTOMER_NAME, timezone="Asia/Tokyo", language="ja")
    session.add(customer)
    session.flush()
    session.add_all(
        [
            User(
                email=CUSTOMER_EMAIL,
                name="デモ 太郎",
                role=Role.CUSTOMER_ADMIN,
                customer_id=customer.id,
                language="ja",
                password_hash=password_hash(creds.customer_password),
            ),
            User(
                email=OPERATOR_EMAIL,
                name="運用 花子",
                role=Role.OPERATOR,
                language="ja",
                password_hash=password_hash(creds.operator_password),
                totp_secret=creds.operator_totp or None,
                totp_enabled_at=now if creds.operator_totp else None,
            ),
        ]
    )
    start = date(today.year, today.month, 1)
    doc = drop_none(config) if config else None
    for i, (tid, secret) in enumerate(sorted(creds.terminals.items()), start=1):
        terminal = Terminal(
            id=tid,
            customer_id=customer.id,
            name=f"第{i}電気室",
            site_address=f"東京都千代田区デモ町{i}-1",
            registered_on=start,
            contract_start=start,
        )
        set_mqtt_password(terminal, secret, creds.seal_public or None)
        session.add(terminal)
        session.flush()
        session.add_all(
            ChannelLabel(
                terminal_id=tid, channel=c, display_name=n, state_off=off, state_on=on, key=key
            )
            for c, n, off, on, key in DEMO_LABELS
        )
        if doc is None:
            continue
        session.add_all(rule_of(tid, t) for t in doc.get("thresholds", []))
        terminal.push_config(int(doc["version"]), now)
        session.add(
            AuditEntry(
                at=now,
                actor="system",
                customer_id=customer.id,
                action="terminal.config.push",
                object_type="terminal",
                object_id=tid,
                details={"version": int(doc["version"]), "config": doc},
            )
        )
    for address, severity in TARGETS:
        session.add(
            NotificationTarget(
                customer_id=customer.id,
                channel=DeliveryChannel.EMAIL,
                address=address,
                min_severity=severity,
                notify_recovery=True,
            )
        )
    if chat:
        session.add(
            NotificationTarget(
                customer_id=customer.id,
                channel=DeliveryChannel.CHAT,
                address=chat,
                min_severity=Severity.WARNING,
                notify_recovery=True,
            )
        )
    if file_server is not None:
        endpoint = ForwardingEndpoint(
            customer_id=customer.id,
            name="デモ 受信サーバ (毎時 CSV)",
            kind="sftp",
            url=file_server.url,
            host_key=file_server.host_key,
            ssh_key=file_server.ssh_key,
            file_period="hourly",
            file_scope="customer",
            file_timezone="Asia/Tokyo",
            hmac_secret=secrets.token_urlsafe(32),  # unused by SFTP endpoints; required
        )
        endpoint.files_from = files.period_start(endpoint, now - timedelta(hours=1))
        session.add(endpoint)
    # Routing per contact input: the electricians hear of the main breaker only.
    session.add(
        NotificationTarget(
            customer_id=customer.id,
            channel=DeliveryChannel.EMAIL,
            address=BREAKER_TARGET,
            channel_name="di.di1",
            min_severity=Severity.WARNING,
            notify_recovery=True,
        )
    )
    tids = sorted(creds.terminals)
    if len(tids) >= MAINTENANCE_TERMINAL:
        # The scenario's terminal 15 loses its link: under maintenance, its
        # alarms show as muted and page nobody.
        session.add(
            MaintenanceWindow(
                customer_id=customer.id,
                terminal_id=tids[MAINTENANCE_TERMINAL - 1],
                channels=[],
                starts_at=now,
                ends_at=now + timedelta(hours=8),
                reason="通信工事 (デモ)",
            )
        )
    session.commit()
    return customer
