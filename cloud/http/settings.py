"""Settings of the web role: session secret, cookies, login throttling, broker.

Defaults live here; a site overrides them with ``MIMAMORI_<FIELD>``
environment variables (upper case, e.g. ``MIMAMORI_SECRET_KEY``; read by
:func:`cloud.config.load` like every setting) or keyword arguments to
:func:`cloud.app.create_app`. Secrets (``secret_key``,
``mqtt_password``) only come from the environment or arguments, never from
the repository. Invalid values raise :class:`cloud.errors.ConfigError` at
construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cloud import config
from cloud.broker.errors import BrokerConfigError
from cloud.broker.sealing import seal
from cloud.errors import ConfigError

MIN_SECRET_BYTES = 32
# Words that mark a value copied from an example rather than generated.
_PLACEHOLDERS = ("change", "secret", "example", "placeholder", "default", "password", "xxxx")


def weak_secret(value: str) -> str | None:
    """Why ``value`` is no real secret key, or None. Not a proof of
    randomness: it catches the empty, the short, the copied and the typed."""
    if not value:
        return "empty"
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        return f"shorter than {MIN_SECRET_BYTES} bytes"
    low = value.lower()
    if any(word in low for word in _PLACEHOLDERS):
        return "looks like a placeholder"
    if len(set(value)) < 16:
        return "too few different characters to be random"
    return None


@dataclasses.dataclass(frozen=True)
class WebSettings:
    """What the web processes need beyond :class:`cloud.config.Settings`."""

    # A development or test rig, not a site customers use: an empty or weak
    # secret key is tolerated (one is made per process) and, without a site
    # URL, links in mail name the request's own host. Production (the
    # default) refuses to start without a site URL and a real secret key.
    development: bool = False
    # Signs session cookies, CSRF and password-reset tokens. Every web process
    # of a site must share it: at least 32 random bytes, e.g.
    # python -c 'import secrets; print(secrets.token_urlsafe(48))'.
    secret_key: str = dataclasses.field(default="", repr=False)
    # Cookies only over HTTPS. Browsers accept secure cookies from
    # http://localhost, so only switch it off for plain-HTTP test rigs.
    cookie_secure: bool = True
    # Strict-Transport-Security on HTTPS responses; 0 leaves the header out.
    hsts_max_age_s: int = 31_536_000
    # Reverse proxies in front of the site: a hop count, not addresses: how
    # many X-Forwarded-For/-Proto entries, counted from the right, were added
    # by proxies of ours (0: none, the socket peer is the client). Login
    # throttling keys on the client address, so this must match the setup.
    # X-Forwarded-Host is never trusted.
    trusted_proxies: int = 0
    # Base URL of the site (https://...), the only source of links in mail.
    site_url: str = ""
    # A login lasts at most `session_absolute_s` however busy, and ends after
    # `session_idle_s` without a request; logout ends it on the server.
    session_absolute_s: int = 24 * 3600
    session_idle_s: int = 12 * 3600

    # /metrics and /readyz show counts across customers and the state of the
    # dependencies: only the host itself (loopback, not through a proxy) and
    # requests with "Authorization: Bearer <monitoring_token>" may read them.
    monitoring_token: str = dataclasses.field(default="", repr=False)
    # How long /readyz reuses its broker login check (one MQTT login per
    # process and period, not per request).
    readiness_broker_cache_s: float = 30.0

    # Passwords: argon2id cost. The defaults take about 50 ms per hash.
    password_min_length: int = 10
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65_536
    argon2_parallelism: int = 4
    reset_token_max_age_s: int = 3600
    # How long the link in an invitation (a new account) stays valid.
    invitation_max_age_s: int = 7 * 86400
    # API tokens expire this many days after they were made.
    api_token_max_age_days: int = 90

    # Login throttling (see cloud.services.throttle): per account and
    # client address, the first `login_free_failures` failures cost nothing,
    # then each further one doubles a wait from `login_base_delay_s` up to
    # `login_max_delay_s`. Independently, an address with
    # `login_ip_max_failures` failures within `login_ip_window_s` is refused
    # until the window has slid past them. Nothing is ever locked for good.
    login_free_failures: int = 3
    login_base_delay_s: int = 2
    login_max_delay_s: int = 900
    login_ip_window_s: int = 900
    login_ip_max_failures: int = 30
    # Per account, whatever the addresses (IP rotation): after
    # `login_account_free_failures` failures since the account's last
    # success, each attempt waits from `login_account_base_delay_s` doubling
    # up to `login_account_max_delay_s` - short, so an attacker cannot lock
    # the owner out; a browser the owner logged in with before skips it.
    login_account_free_failures: int = 10
    login_account_base_delay_s: int = 1
    login_account_max_delay_s: int = 60

    # Broker the web publishes retained config frames to (service account of
    # role "web"), and what the installer's site file tells terminals.
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 8884  # the service listener (docs/deployment.md)
    mqtt_username: str = "web"
    mqtt_password: str = dataclasses.field(default="", repr=False)
    mqtt_tls_ca: str = ""  # CA file for TLS to the broker; empty: plain TCP
    mqtt_timeout_s: float = 10.0
    broker_public_host: str = "mqtt.example.invalid"
    broker_public_port: int = 8883
    broker_public_tls: bool = True
    # The broker reconciler's public sealing key (python -m cloud.brokersync
    # keygen): provisioned passwords are sealed to it so the reconciler can
    # give them to the broker. Public: it cannot open what it seals.
    broker_seal_key: str = ""
    # Over-the-air updates: the Ed25519 public keys (hex) an uploaded bundle
    # may be signed with (docs/ota.md; the private keys stay with operators).
    ota_keys: tuple[str, ...] = ()

    # Terminal defaults the cloud cannot read from the terminal itself.
    default_sample_interval_s: int = 60
    # Graph requests: most buckets or points one channel answers with.
    graph_max_points: int = 2000
    # CSV export: longest range, in days.
    export_max_days: int = 400
    # Where uPlot's dist/ files are (the npm package); empty: node_modules/
    # at the repository root.
    uplot_dir: str = ""

    def __post_init__(self) -> None:
        positive = (
            "password_min_length",
            "argon2_time_cost",
            "argon2_memory_kib",
            "argon2_parallelism",
            "reset_token_max_age_s",
            "invitation_max_age_s",
            "api_token_max_age_days",
            "session_absolute_s",
            "session_idle_s",
            "login_base_delay_s",
            "login_max_delay_s",
            "login_ip_window_s",
            "login_ip_max_failures",
            "login_account_base_delay_s",
            "login_account_max_delay_s",
            "default_sample_interval_s",
            "graph_max_points",
            "export_max_days",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: {getattr(self, name)} must be >= 1")
        if self.login_account_max_delay_s < self.login_account_base_delay_s:
            raise ConfigError("login_account_max_delay_s is below login_account_base_delay_s")
        for name in (
            "hsts_max_age_s",
            "trusted_proxies",
            "login_free_failures",
            "login_account_free_failures",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)} is negative")
        if self.login_max_delay_s < self.login_base_delay_s:
            raise ConfigError("login_max_delay_s is below login_base_delay_s")
        if self.argon2_memory_kib < 8 * self.argon2_parallelism:
            raise ConfigError("argon2_memory_kib must be at least 8 x argon2_parallelism")
        for name in ("mqtt_port", "broker_public_port"):
            if not 0 < getattr(self, name) < 65536:
                raise ConfigError(f"{name}: {getattr(self, name)} out of range")
        if not 0 <= self.readiness_broker_cache_s <= 3600:
            raise ConfigError("readiness_broker_cache_s must be 0..3600")
        if self.monitoring_token and weak_secret(self.monitoring_token):
            raise ConfigError(
                f"monitoring_token: {weak_secret(self.monitoring_token)}; use 32+ random bytes"
            )
        if not 0 < self.mqtt_timeout_s <= 120:
            raise ConfigError(f"mqtt_timeout_s: {self.mqtt_timeout_s} not in (0, 120]")
        if self.site_url and not self.site_url.startswith(("http://", "https://")):
            raise ConfigError(f"site_url: {self.site_url!r} must be http(s)")
        if not self.development:
            if not self.site_url:
                raise ConfigError(
                    "site_url: required (links in mail must not take their host from a "
                    "request); set MIMAMORI_SITE_URL, or MIMAMORI_DEVELOPMENT=1 on a test rig"
                )
            weak = weak_secret(self.secret_key)
            if weak:
                raise ConfigError(
                    f"secret_key: {weak}; set MIMAMORI_SECRET_KEY to at least 32 random "
                    "bytes (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
        if self.broker_seal_key:
            try:
                seal(self.broker_seal_key, "check")
            except BrokerConfigError as err:
                raise ConfigError(f"broker_seal_key: {err}") from err
        for key in self.ota_keys:
            if len(key) != 64 or any(c not in "0123456789abcdef" for c in key.lower()):
                raise ConfigError("ota_keys: %r is not an Ed25519 public key (64 hex digits)" % key)
        if not 10 <= self.graph_max_points <= 10_000:
            raise ConfigError("graph_max_points must be 10..10000")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> WebSettings:
        """Defaults, then ``MIMAMORI_*`` variables, then ``overrides``
        (:func:`cloud.config.load`)."""
        return config.load(cls, env=env, overrides=overrides)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))
