"""Settings of the delivery worker: SMTP server, sender identity, retry policy.

Defaults live here; a site overrides them with ``MIMAMORI_<FIELD>`` variables
(upper case, e.g. ``MIMAMORI_SMTP_HOST``; read by :func:`cloud.config.load`
like every setting) or keyword arguments. The SMTP
password only ever comes from the environment (``MIMAMORI_SMTP_PASSWORD``),
never from the command line, where ``ps`` would show it.
Invalid values raise :class:`cloud.errors.ConfigError` at construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cloud import config
from cloud.errors import ConfigError
from cloud.models.tenancy import normalize_email
from cloud.notify.netguard import AddressPolicy


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed delivery again, and when to give up.

    The n-th failed attempt (n >= 1) waits ``base_s * factor**(n-1)``
    seconds, capped at ``max_delay_s``; after ``max_attempts`` attempts the
    row is dead. ``lease_s`` is how long a claimed row stays invisible to
    other workers: it must exceed the longest send (SMTP/HTTP timeouts), or a
    slow send could be repeated by a second worker.
    """

    base_s: float = 60.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    # 60 s doubling to hourly: 80 attempts span about three days, a mail
    # server's usual queue lifetime. Alarm mail must outlast an SMTP outage
    # of a weekend night, not die after four hours (10 attempts did).
    max_attempts: int = 80
    lease_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.base_s > 0 or not self.factor >= 1 or self.max_delay_s < self.base_s:
            raise ConfigError(f"retry policy: bad backoff {self}")
        if self.max_attempts < 1:
            raise ConfigError(f"retry policy: max_attempts {self.max_attempts} < 1")
        if not self.lease_s > 0:
            raise ConfigError(f"retry policy: lease_s {self.lease_s} must be > 0")

    def delay(self, attempts: int) -> timedelta | None:
        """Wait after ``attempts`` failed attempts; None means give up (dead)."""
        if attempts >= self.max_attempts:
            return None
        seconds = min(self.max_delay_s, self.base_s * self.factor ** max(0, attempts - 1))
        return timedelta(seconds=seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_s)


@dataclasses.dataclass(frozen=True)
class NotifySettings:
    """Where and how the delivery worker sends."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_user: str = ""
    smtp_password: str = dataclasses.field(default="", repr=False)
    # "none", "starttls" (submission port 587) or "ssl" (port 465).
    smtp_security: str = "none"
    smtp_timeout_s: float = 30.0
    mail_from: str = "mimamori@localhost.localdomain"
    # Right-hand side of Message-IDs; a domain the site controls.
    message_id_domain: str = "mimamori.invalid"
    # Base URL of the web site, for links in mail; empty leaves links out.
    site_url: str = ""
    # Total deadline of one webhook POST (resolve, connect, send, answer).
    webhook_timeout_s: float = 10.0
    # Private, loopback or link-local addresses webhooks may reach anyway:
    # comma-separated networks (CIDR) and host names (docs/security.md).
    webhook_allow: str = ""
    # Webhook destinations sent to at once by one worker, and at most this
    # many of them for one customer (cloud.notify.lanes).
    webhook_concurrency: int = 8
    webhook_per_customer: int = 2
    # Total deadline of one forwarded file's SFTP upload (connect, log in, write).
    file_timeout_s: float = 120.0
    # Webhook receivers refuse signatures older than this (replay window).
    webhook_tolerance_s: int = 300

    def __post_init__(self) -> None:
        if not self.smtp_host:
            raise ConfigError("smtp_host is empty")
        if not 0 < self.smtp_port < 65536:
            raise ConfigError(f"smtp_port {self.smtp_port} out of range")
        if self.smtp_security not in ("none", "starttls", "ssl"):
            raise ConfigError(f"smtp_security {self.smtp_security!r}: none, starttls or ssl")
        if bool(self.smtp_user) != bool(self.smtp_password):
            raise ConfigError("smtp_user and smtp_password go together")
        for name in ("smtp_timeout_s", "webhook_timeout_s", "file_timeout_s"):
            if not 0 < getattr(self, name) <= 600:
                raise ConfigError(f"{name} not in (0, 600]")
        AddressPolicy(self.webhook_allow)  # raises ConfigError for a bad entry
        if not 1 <= self.webhook_per_customer <= self.webhook_concurrency <= 256:
            raise ConfigError(
                "need 1 <= webhook_per_customer <= webhook_concurrency <= 256, got "
                f"{self.webhook_per_customer} and {self.webhook_concurrency}"
            )
        try:
            normalize_email(self.mail_from)
        except ValueError as err:
            raise ConfigError(f"mail_from: {err}") from err
        if not self.message_id_domain or "@" in self.message_id_domain:
            raise ConfigError(f"message_id_domain {self.message_id_domain!r} is not a domain")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> NotifySettings:
        """Defaults, then ``MIMAMORI_*`` variables, then ``overrides`` (None skipped;
        :func:`cloud.config.load`)."""
        return config.load(cls, env=env, overrides=overrides)
