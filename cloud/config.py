"""Settings of every cloud process, and the one loader that reads them.

Each part has its settings class, a frozen dataclass whose fields are the
settings with their defaults in code: :class:`Settings` here (database, time
series, defaults for new customers), :class:`cloud.http.settings.WebSettings`
(the web site and API), :class:`cloud.notify.settings.NotifySettings` (mail
and webhooks) and :class:`cloud.ops.settings.OpsSettings` (scheduled jobs).
All of them are built by :func:`load`, so every setting is read the same
way, by every process:

1. the default in code;
2. a TOML file, for the classes that have one: ``instance/mimamori.toml``
   (or ``$MIMAMORI_INSTANCE_FILE``) for :class:`Settings`,
   ``instance/ops.toml`` (or ``$MIMAMORI_OPS_FILE``) for ``OpsSettings``;
3. the environment file ``$MIMAMORI_ENV_FILE`` (``KEY=VALUE`` lines, the
   format of systemd's ``EnvironmentFile``), if one is named;
4. the process environment: ``MIMAMORI_<FIELD>`` in upper case, e.g.
   ``MIMAMORI_DATABASE_URL``, unless the field names its own (:func:`variable`)
   (booleans: 1/true/yes/on, 0/false/no/off; lists: comma-separated);
5. keyword arguments (tests, command-line options).

Every value is checked when the class is built. A bad one raises
:class:`cloud.errors.ConfigError` naming the setting and where its value
came from (``$MIMAMORI_SMTP_PORT: smtp_port must be int, got 'x'``); a file
that was named but is missing is an error too, so a typo stops the process
at start instead of surfacing at 3 a.m. Unknown keys in a TOML file are
errors; unknown ``MIMAMORI_*`` variables are ignored (each class reads its
own, and other tools share the prefix). Secrets belong in the environment
or an untracked file, never in the repository. Every variable is listed in
``docs/configuration.md``.

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
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.errors import ConfigError

ENV_PREFIX = "MIMAMORI_"
ENV_FILE_ENV = "MIMAMORI_ENV_FILE"
INSTANCE_FILE_ENV = "MIMAMORI_INSTANCE_FILE"
DEFAULT_INSTANCE_FILE = Path("instance") / "mimamori.toml"

LANGUAGES = ("ja", "en")
TIMESERIES_BACKENDS = ("sql", "influx")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# Field types the loader reads (dataclass annotations are strings here).
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
}
_STR_TUPLE = "tuple[str, ...]"

T = TypeVar("T")


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

    # A config the terminal has not acknowledged this long after it was
    # published is published again (retained) by the ingest; later re-pushes
    # wait twice as long each time, at most `config_repush_max_interval_s`.
    config_ack_deadline_s: int = 600
    config_repush_max_interval_s: int = 86400

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
        if self.config_ack_deadline_s < 1:
            raise ConfigError(f"config_ack_deadline_s: {self.config_ack_deadline_s} is below 1")
        if self.config_repush_max_interval_s < self.config_ack_deadline_s:
            raise ConfigError(
                f"config_repush_max_interval_s: {self.config_repush_max_interval_s} is below "
                f"config_ack_deadline_s ({self.config_ack_deadline_s})"
            )
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
        """Build settings as the module docstring says.

        ``env`` defaults to ``os.environ``. ``instance_file`` defaults to
        ``$MIMAMORI_INSTANCE_FILE`` or ``instance/mimamori.toml``; a missing
        default file is fine, a missing file that was named explicitly is an
        error.
        """
        variables = environment(env)
        named = instance_file or variables.get(INSTANCE_FILE_ENV)
        path = Path(named or DEFAULT_INSTANCE_FILE)
        table = read_toml(path, required=bool(named), what="instance file")
        return load(cls, env=variables, file=table, origin=f"instance file {path}")


# -- the loader ------------------------------------------------------------------


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables settings are read from: ``env`` (default ``os.environ``)
    over the environment file it names in ``$MIMAMORI_ENV_FILE``, if any.

    Raises :class:`ConfigError` when the named file is missing or malformed.
    """
    env = os.environ if env is None else env
    named = env.get(ENV_FILE_ENV)
    if not named:
        return dict(env)
    return {**read_env_file(Path(named), origin=f"${ENV_FILE_ENV}"), **env}


def read_env_file(path: Path, origin: str = "environment file") -> dict[str, str]:
    """``KEY=VALUE`` lines of ``path`` (blank lines and ``#`` comments skipped,
    one pair of matching quotes around a value removed), as systemd's
    ``EnvironmentFile`` reads them. ConfigError for a missing file or a bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{origin}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{origin}: {path}: {err}") from err
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.replace("_", "").isalnum():
            raise ConfigError(f"{path}:{number}: expected NAME=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def secret(
    path: Path | None, variable: str, option: str, env: Mapping[str, str] | None = None
) -> str:
    """A secret a process is given outside its settings: the content of the
    file ``path`` (command-line ``option``, e.g. ``--password-file``) or else
    the variable ``variable`` of :func:`environment`. Never an argument on the
    command line, where other users would see it. ConfigError naming both
    when neither gives one, or when the file cannot be read."""
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"{option}: {err}") from err
    value = environment(env).get(variable, "")
    if not value:
        raise ConfigError(f"${variable} is not set (or pass {option})")
    return value


def read_toml(path: Path, *, required: bool, what: str) -> dict[str, Any]:
    """The table in TOML file ``path``; ``{}`` when it is missing and not
    ``required`` (a default path). ConfigError names ``what`` and the path."""
    if not path.is_file():
        if required:
            raise ConfigError(f"{what} {path} does not exist")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{what} {path}: {err}") from err


def load(
    cls: type[T],
    *,
    env: Mapping[str, str] | None = None,
    file: Mapping[str, Any] | None = None,
    origin: str = "settings file",
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build the settings dataclass ``cls``: its defaults, then ``file`` (the
    parsed TOML table, from ``origin``), then ``MIMAMORI_<FIELD>`` variables of
    :func:`environment` (``env``), then ``overrides`` (None values skipped).

    Raises :class:`ConfigError` naming the setting and the origin of a bad
    value: an unknown key in ``file``, a value of the wrong type, or what the
    class itself refuses.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    types = {f.name: str(f.type) for f in fields}
    values: dict[str, Any] = {}
    for key, value in (file or {}).items():
        if key not in types:
            raise ConfigError(f"{origin}: unknown setting {key!r}")
        values[key] = _checked(key, value, types[key], origin)
    variables = environment(env)
    for field in fields:
        name = variable(field)
        raw = variables.get(name)
        if raw is not None:
            values[field.name] = _parsed(field.name, raw, types[field.name], f"${name}")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return cls(**values)


def variable(field: dataclasses.Field[Any]) -> str:
    """The environment variable of a settings field: ``MIMAMORI_<NAME>``, or
    the one its metadata names (``metadata={"env": "MIMAMORI_..."}``)."""
    return str(field.metadata.get("env") or ENV_PREFIX + field.name.upper())


def _checked(name: str, value: Any, type_name: str, origin: str) -> Any:
    """A TOML value of the field's type; ints are accepted for floats."""
    if type_name == _STR_TUPLE:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {name} must be a list of strings, got {value!r}")
        return tuple(value)
    kinds = _SCALARS.get(type_name)
    if kinds is None:  # a structured setting: the class checks it itself
        return value
    # Exact types: bool is an int subclass, and a TOML `true` is not a number.
    if type(value) not in kinds:
        raise ConfigError(f"{origin}: {name} must be {type_name}, got {value!r}")
    return float(value) if type_name == "float" else value


def _parsed(name: str, raw: str, type_name: str, origin: str) -> Any:
    """An environment string turned into the field's type."""
    try:
        if type_name == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(f"not one of {', '.join(_TRUE + _FALSE)}")
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == _STR_TUPLE:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if type_name != "str":
            raise ValueError("set it in the settings file")
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
