"""Settings of the cloud roles: data with defaults in code.

Precedence, lowest first: the defaults below, the site's untracked instance
file (TOML, ``instance/mimamori.toml`` unless ``MIMAMORI_INSTANCE_FILE`` says
otherwise), then environment variables ``MIMAMORI_<FIELD>`` (upper case).
Secrets belong in the instance file or the environment, never in the repo.

Every value is checked when the :class:`Settings` is built; a bad one raises
:class:`cloud.errors.ConfigError` naming the field and where it came from, so
a typo stops the process at start instead of surfacing at 3 a.m.

Example instance file::

    database_url = "postgresql+psycopg://mimamori@db/mimamori"
    timeseries_backend = "influx"
    influx_url = "http://influx:8086"
    influx_password = "..."
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.errors import ConfigError

ENV_PREFIX = "MIMAMORI_"
INSTANCE_FILE_ENV = "MIMAMORI_INSTANCE_FILE"
DEFAULT_INSTANCE_FILE = Path("instance") / "mimamori.toml"

LANGUAGES = ("ja", "en")
TIMESERIES_BACKENDS = ("sql", "influx")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Validated, immutable settings. Build with :meth:`load` in processes,
    or directly with keyword arguments in tests.

    Raises :class:`ConfigError` from the constructor for any invalid value.
    """

    # Relational database: SQLite file by default, PostgreSQL in production.
    database_url: str = "sqlite:///instance/mimamori.sqlite3"
    sql_echo: bool = False

    # Time series: "sql" keeps samples in the relational database,
    # "influx" sends them to an InfluxDB v1-compatible HTTP API.
    timeseries_backend: str = "sql"
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "mimamori"
    influx_username: str = ""
    influx_password: str = ""
    influx_timeout_s: float = 10.0
    # Samples older than this are deleted by the retention job; 0 keeps all.
    retention_days: int = 400

    # What new customers and users get unless they choose otherwise.
    default_timezone: str = "Asia/Tokyo"
    default_language: str = "ja"

    def __post_init__(self) -> None:
        _check_url("database_url", self.database_url, ("sqlite", "postgresql", "postgres"))
        _check_choice("timeseries_backend", self.timeseries_backend, TIMESERIES_BACKENDS)
        _check_url("influx_url", self.influx_url, ("http", "https"))
        if not self.influx_database or not self.influx_database.replace("_", "").isalnum():
            raise ConfigError(f"influx_database: {self.influx_database!r} is not a plain name")
        if not 0 < self.influx_timeout_s <= 600:
            raise ConfigError(f"influx_timeout_s: {self.influx_timeout_s} not in (0, 600]")
        if self.retention_days < 0:
            raise ConfigError(f"retention_days: {self.retention_days} is negative")
        try:
            ZoneInfo(self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ConfigError(f"default_timezone: unknown zone {self.default_timezone!r}") from err
        _check_choice("default_language", self.default_language, LANGUAGES)

    @classmethod
    def load(
        cls,
        env: Mapping[str, str] | None = None,
        instance_file: Path | str | None = None,
    ) -> Settings:
        """Build settings from defaults, the instance file and the environment.

        ``env`` defaults to ``os.environ``. ``instance_file`` defaults to
        ``$MIMAMORI_INSTANCE_FILE`` or ``instance/mimamori.toml``; a missing
        default file is fine, a missing file that was named explicitly is an
        error. Unknown keys in the file are errors (typos must not pass
        silently); unknown ``MIMAMORI_*`` variables are ignored because other
        tools share the prefix.
        """
        env = os.environ if env is None else env
        explicit = instance_file is not None or INSTANCE_FILE_ENV in env
        path = Path(instance_file or env.get(INSTANCE_FILE_ENV) or DEFAULT_INSTANCE_FILE)
        values: dict[str, Any] = {}
        if path.is_file():
            values.update(_read_instance_file(path))
        elif explicit:
            raise ConfigError(f"instance file {path} does not exist")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, field in fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _parse(name, raw, field.type, f"${ENV_PREFIX}{name.upper()}")
        return cls(**values)


def _read_instance_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"instance file {path}: {err}") from err
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"instance file {path}: unknown setting {key!r}")
        values[key] = _coerce(key, value, fields[key].type, str(path))
    return values


def _coerce(name: str, value: Any, type_name: Any, origin: str) -> Any:
    """Check a TOML value against the field's declared type (a string under
    ``from __future__ import annotations``); ints are accepted for floats."""
    expected: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "bool": (bool,),
        "int": (int,),
        "float": (int, float),
    }
    kinds = expected[str(type_name)]
    # Exact types: bool is an int subclass, and a TOML `true` is not a number.
    if type(value) not in kinds:
        raise ConfigError(f"{origin}: {name} must be {type_name}, got {value!r}")
    if type_name == "float":
        return float(value)
    return value


def _parse(name: str, raw: str, type_name: Any, origin: str) -> Any:
    """Turn an environment string into the field's type."""
    type_name = str(type_name)
    try:
        if type_name == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"not one of {_TRUE + _FALSE}")
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
    except ValueError as err:
        raise ConfigError(f"{origin}: {name} must be {type_name}, got {raw!r} ({err})") from err
    return raw


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> None:
    scheme = urlsplit(value).scheme.split("+", 1)[0]
    if scheme not in schemes:
        raise ConfigError(f"{name}: {value!r} must start with one of {', '.join(schemes)}")
