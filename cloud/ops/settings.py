"""Settings of the operations jobs: data with defaults in code.

They live in their own TOML file (``instance/ops.toml`` unless
``MIMAMORI_OPS_FILE`` names another) because they are many;
:class:`cloud.config.Settings` keeps the connection settings. Prices are not
settings: they are the price list in the database (:mod:`cloud.ops.prices`),
which operators change on the site.
Scalar settings may also come from ``MIMAMORI_<FIELD>`` variables, which win
over the file, as for every settings class (:func:`cloud.config.load`).
Unknown keys and bad values raise :class:`cloud.errors.ConfigError` at load.

Example::

    backup_dir = "/var/backups/mimamori"
    backup_generations = 2
    components = ["database", "timeseries", "broker", "ingest", "web"]
    web_health_url = "http://127.0.0.1:8000/healthz"
    tax_rate_percent = 10
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud import config
from cloud.errors import ConfigError

OPS_FILE_ENV = "MIMAMORI_OPS_FILE"
# The broker check's password: a secret, so from the environment only.
MONITOR_PASSWORD_ENV = "MIMAMORI_MONITOR_MQTT_PASSWORD"  # noqa: S105
DEFAULT_OPS_FILE = Path("instance") / "ops.toml"
COMPONENTS = ("database", "timeseries", "broker", "ingest", "web")
TIMESERIES_BACKUP = ("auto", "always", "never")


def _hhmm(name: str, value: str) -> tuple[int, int]:
    try:
        hour, minute = (int(p) for p in value.split(":"))
    except ValueError as err:
        raise ConfigError(f"{name}: {value!r} is not HH:MM") from err
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ConfigError(f"{name}: {value!r} is not a time of day")
    return hour, minute


@dataclasses.dataclass(frozen=True)
class OpsSettings:
    """Validated, immutable operations settings. Build with :meth:`load`,
    or with keyword arguments in tests. Raises :class:`ConfigError`."""

    # Zone of the operations calendar: job times, log archive months.
    zone: str = "Asia/Tokyo"

    # Scheduler leader lease: renewed every third of its length.
    lease_ttl_s: int = 60

    # Backups: one directory per run, the newest `backup_generations` kept.
    backup_dir: str = "instance/backups"
    backup_generations: int = 2
    backup_at: str = "03:00"
    # "auto": export the time series only when they are not in the database
    # (InfluxDB backend); "always" also with the SQL backend; "never".
    backup_timeseries: str = "auto"
    pg_bin_dir: str = ""  # where pg_dump/pg_restore are; "" = on PATH

    # Logs: audit table rows and log files older than `log_online_months`
    # move to monthly gzip JSON-lines archives, kept `log_archive_months`.
    log_dir: str = "instance/logs"
    archive_dir: str = "instance/archive"
    log_online_months: int = 3
    log_archive_months: int = 12
    retention_at: str = "04:00"
    # Health checks and job runs are evidence of availability: kept this long.
    evidence_months: int = 13

    # Availability: which components are checked, how often, how.
    components: tuple[str, ...] = COMPONENTS
    health_interval_s: int = 60
    check_timeout_s: float = 5.0
    web_health_url: str = "http://127.0.0.1:5000/healthz"
    broker_host: str = "127.0.0.1"
    broker_port: int = 8884  # the service listener (docs/deployment.md)
    broker_tls: bool = False
    broker_ca_file: str = ""
    # The service account the broker check logs in with (role monitor); its
    # password comes from $MIMAMORI_MONITOR_MQTT_PASSWORD.
    broker_username: str = "monitor"
    broker_password: str = dataclasses.field(
        default="", repr=False, metadata={"env": MONITOR_PASSWORD_ENV}
    )
    # Ingest counts as down when terminals are online but no frame arrived for this long.
    ingest_max_silence_s: int = 300
    # Failure notices go out once a component has been down this many minutes.
    failure_notice_after_min: int = 3

    # Billing: consumption tax, issuer shown on invoices (prices: cloud.ops.prices).
    tax_rate_percent: int = 10
    issuer_name: str = "mimamori"
    issuer_registration_number: str = ""  # 適格請求書発行事業者登録番号 (T + 13 digits)
    invoices_at: str = "06:00"  # on the 1st, for the month before
    pdf_font: str = ""  # a TrueType font with Japanese glyphs; "" = search known paths

    # Monthly reports: where the scheduled run writes them; nominal sampling
    # interval for the completeness figure (expected samples per channel).
    reports_dir: str = "instance/reports"
    reports_at: str = "07:00"
    report_sample_interval_s: int = 60

    # Maintenance announcements go out this long before the work starts.
    announce_lead_hours: int = 72
    announce_interval_s: int = 300

    # Forwarded CSV files (SFTP endpoints): queued this often, each period
    # this long after it ended (samples still arriving from terminals' queues).
    forward_files_interval_s: int = 300
    forward_files_grace_s: int = 600

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ConfigError(f"zone: unknown time zone {self.zone!r}") from err
        for name in ("backup_at", "retention_at", "invoices_at", "reports_at"):
            _hhmm(name, getattr(self, name))
        positive = (
            "lease_ttl_s",
            "backup_generations",
            "log_online_months",
            "log_archive_months",
            "evidence_months",
            "health_interval_s",
            "ingest_max_silence_s",
            "failure_notice_after_min",
            "report_sample_interval_s",
            "announce_interval_s",
            "forward_files_interval_s",
            "forward_files_grace_s",
        )
        for name in positive:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{name}: must be a whole number >= 1, got {value!r}")
        if self.lease_ttl_s < 3:
            raise ConfigError("lease_ttl_s: at least 3 seconds (renewed every third)")
        if not 0 < self.check_timeout_s <= 60:
            raise ConfigError(f"check_timeout_s: {self.check_timeout_s} not in (0, 60]")
        if self.backup_timeseries not in TIMESERIES_BACKUP:
            raise ConfigError(
                f"backup_timeseries: {self.backup_timeseries!r} not in {TIMESERIES_BACKUP}"
            )
        unknown = set(self.components) - set(COMPONENTS)
        if unknown or not self.components:
            raise ConfigError(f"components: {sorted(unknown)} unknown; choose from {COMPONENTS}")
        if type(self.tax_rate_percent) is not int or not 0 <= self.tax_rate_percent <= 100:
            raise ConfigError(f"tax_rate_percent: {self.tax_rate_percent!r} not in 0..100")
        if not 0 < self.broker_port < 65536:
            raise ConfigError(f"broker_port: {self.broker_port}")
        if self.announce_lead_hours < 0:
            raise ConfigError("announce_lead_hours: negative")

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def time_of(self, name: str) -> tuple[int, int]:
        """(hour, minute) of the ``*_at`` setting ``name``."""
        return _hhmm(name, getattr(self, name))

    @classmethod
    def load(
        cls, path: Path | str | None = None, env: Mapping[str, str] | None = None
    ) -> OpsSettings:
        """Read ``path`` (default ``$MIMAMORI_OPS_FILE`` or ``instance/ops.toml``),
        then the ``MIMAMORI_*`` variables (:func:`cloud.config.load`).

        A missing default file gives the defaults; a missing file that was
        named explicitly is an error, as is any unknown key or mistyped value.
        """
        variables = config.environment(env)
        named = path or variables.get(OPS_FILE_ENV)
        file = Path(named or DEFAULT_OPS_FILE)
        data = config.read_toml(file, required=bool(named), what="ops settings file")
        if "broker_password" in data:
            raise ConfigError(f"{file}: broker_password belongs in ${MONITOR_PASSWORD_ENV}")
        return cls.from_mapping(data, origin=f"ops settings file {file}", env=variables)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        origin: str = "settings",
        env: Mapping[str, str] | None = None,
    ) -> OpsSettings:
        """Build from parsed TOML (and ``env``, default none); raise
        :class:`ConfigError` naming the setting and ``origin``."""
        table = dict(data)
        if "plans" in table:
            raise ConfigError(
                f"{origin}: plans: prices are no longer settings; operators set them "
                "in the price list (Administration > Price list)"
            )
        if "components" in table and not (
            isinstance(table["components"], list)
            and all(isinstance(v, str) for v in table["components"])
        ):
            raise ConfigError(f"{origin}: components must be a list of names")
        return config.load(cls, env={} if env is None else env, file=table, origin=origin)
