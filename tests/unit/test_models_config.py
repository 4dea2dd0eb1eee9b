"""Settings: defaults in code, instance file, environment; bad values raise at construction."""

from __future__ import annotations

import pytest

from cloud.config import Settings
from cloud.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_site_instance_file(tmp_path, monkeypatch):
    # The default instance file is relative to the working directory; a
    # developer's own instance/mimamori.toml must not leak into these tests.
    monkeypatch.chdir(tmp_path)


def test_defaults_are_valid_and_embedded():
    s = Settings.load(env={}, instance_file=None)
    assert s.database_url.startswith("sqlite:///")
    assert (s.timeseries_backend, s.default_timezone, s.default_language) == (
        "sql",
        "Asia/Tokyo",
        "ja",
    )


def test_environment_overrides_instance_file_overrides_defaults(tmp_path):
    f = tmp_path / "mimamori.toml"
    f.write_text(
        'database_url = "postgresql://db/m"\nretention_days = 30\ninflux_timeout_s = 3\n'
        "sql_echo = true\n"
    )
    env = {"MIMAMORI_RETENTION_DAYS": "90", "MIMAMORI_TIMESERIES_BACKEND": "influx"}
    s = Settings.load(env=env, instance_file=f)
    assert s.database_url == "postgresql://db/m"  # from the file
    assert s.retention_days == 90  # env wins over the file
    assert s.timeseries_backend == "influx"
    assert s.influx_timeout_s == 3.0 and isinstance(s.influx_timeout_s, float)
    assert s.sql_echo is True


def test_instance_file_can_be_named_by_environment(tmp_path):
    f = tmp_path / "site.toml"
    f.write_text('default_language = "en"\n')
    s = Settings.load(env={"MIMAMORI_INSTANCE_FILE": str(f)})
    assert s.default_language == "en"


def test_named_instance_file_that_is_missing_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(env={"MIMAMORI_INSTANCE_FILE": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('databse_url = "sqlite://"\n', "unknown setting 'databse_url'"),
        ("retention_days = true\n", "retention_days must be int"),
        ('retention_days = "30"\n', "retention_days must be int"),
        ("sql_echo = 1\n", "sql_echo must be bool"),
        ("this is not toml\n", "instance file"),
    ],
)
def test_bad_instance_file_names_the_problem(tmp_path, text, match):
    f = tmp_path / "m.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        Settings.load(env={}, instance_file=f)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("MIMAMORI_RETENTION_DAYS", "thirty", r"\$MIMAMORI_RETENTION_DAYS"),
        ("MIMAMORI_RETENTION_DAYS", "-1", "negative"),
        ("MIMAMORI_SQL_ECHO", "maybe", "sql_echo must be bool"),
        ("MIMAMORI_DATABASE_URL", "mysql://x/y", "database_url"),
        ("MIMAMORI_TIMESERIES_BACKEND", "mongo", "timeseries_backend"),
        ("MIMAMORI_INFLUX_URL", "influx.local:8086", "influx_url"),
        ("MIMAMORI_INFLUX_DATABASE", "a;DROP", "influx_database"),
        ("MIMAMORI_INFLUX_TIMEOUT_S", "0", "influx_timeout_s"),
        ("MIMAMORI_DEFAULT_TIMEZONE", "JST", "unknown zone"),
        ("MIMAMORI_DEFAULT_LANGUAGE", "de", "default_language"),
    ],
)
def test_bad_environment_values_raise_at_construction(name, value, match):
    with pytest.raises(ConfigError, match=match):
        Settings.load(env={name: value}, instance_file=None)


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("off", False)])
def test_boolean_spellings(raw, expected):
    assert Settings.load(env={"MIMAMORI_SQL_ECHO": raw}).sql_echo is expected


def test_unrelated_prefixed_variables_are_ignored():
    assert Settings.load(env={"MIMAMORI_BROKER_PORT": "1883"}) == Settings()


def test_settings_are_immutable():
    s = Settings()
    with pytest.raises(AttributeError):
        s.database_url = "sqlite://"  # type: ignore[misc]
