"""One loader for every settings class: same sources, same parsing, same errors.

``cloud.config.load`` builds Settings, WebSettings, NotifySettings and
OpsSettings; docs/configuration.md lists every variable it reads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cloud.config import Settings, environment, secret, variable
from cloud.errors import ConfigError
from cloud.http.settings import WebSettings
from cloud.notify.settings import NotifySettings
from cloud.ops.settings import OpsSettings

ROOT = Path(__file__).resolve().parents[2]
CLASSES = (Settings, WebSettings, NotifySettings, OpsSettings)


def build(cls, env):
    if cls is Settings:
        return Settings.load(env=env)
    if cls is OpsSettings:
        return OpsSettings.load(env=env)
    if cls is WebSettings:  # production would also want a site URL and a secret key
        return cls.from_env({"MIMAMORI_DEVELOPMENT": "1", **env})
    return cls.from_env(env)


@pytest.fixture(autouse=True)
def _no_site_files(tmp_path, monkeypatch):
    # instance/*.toml are relative to the working directory
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (Settings, "retention_days"),
        (WebSettings, "hsts_max_age_s"),
        (NotifySettings, "smtp_port"),
        (OpsSettings, "backup_generations"),
    ],
)
def test_a_bad_number_gets_the_same_error_naming_variable_and_setting(cls, field):
    variable = "MIMAMORI_" + field.upper()
    with pytest.raises(ConfigError) as err:
        build(cls, {variable: "twelve"})
    assert str(err.value).startswith(f"${variable}: {field} must be int, got 'twelve'")


@pytest.mark.parametrize(
    ("cls", "field"),
    [
        (Settings, "sql_echo"),
        (WebSettings, "cookie_secure"),
        (OpsSettings, "broker_tls"),
    ],
)
def test_booleans_are_read_the_same_everywhere(cls, field):
    variable = "MIMAMORI_" + field.upper()
    for raw, value in (("yes", True), ("1", True), ("Off", False), ("false", False)):
        assert getattr(build(cls, {variable: raw}), field) is value
    with pytest.raises(ConfigError, match=rf"\${variable}: {field} must be bool"):
        build(cls, {variable: "maybe"})


def test_the_environment_file_feeds_every_class_and_the_process_environment_wins(tmp_path):
    env_file = tmp_path / "mimamori.env"
    env_file.write_text(
        "# read by every mimamori process\n"
        "MIMAMORI_RETENTION_DAYS=30\n"
        'MIMAMORI_SMTP_HOST="mail.example.net"\n'
        "MIMAMORI_COOKIE_SECURE=0\n"
        "MIMAMORI_BACKUP_GENERATIONS=5\n"
        "\n"
        "MIMAMORI_DEFAULT_LANGUAGE='en'\n"
    )
    env = {"MIMAMORI_ENV_FILE": str(env_file), "MIMAMORI_DEFAULT_LANGUAGE": "ja"}
    assert Settings.load(env=env).retention_days == 30
    assert Settings.load(env=env).default_language == "ja"  # the process environment wins
    assert NotifySettings.from_env(env).smtp_host == "mail.example.net"
    assert build(WebSettings, env).cookie_secure is False
    assert OpsSettings.load(env=env).backup_generations == 5


def test_a_named_environment_file_that_is_missing_is_an_error(tmp_path):
    missing = tmp_path / "nope.env"
    for cls in CLASSES:
        with pytest.raises(ConfigError, match=r"\$MIMAMORI_ENV_FILE: .*nope.env does not exist"):
            build(cls, {"MIMAMORI_ENV_FILE": str(missing)})


def test_a_malformed_environment_file_names_the_line(tmp_path):
    env_file = tmp_path / "bad.env"
    env_file.write_text("MIMAMORI_SMTP_HOST=mail\nthis line has no equals sign\n")
    with pytest.raises(ConfigError, match=r"bad.env:2: expected NAME=VALUE"):
        environment({"MIMAMORI_ENV_FILE": str(env_file)})


def test_ops_files_and_variables_combine_and_lists_split_on_commas(tmp_path):
    ops_file = tmp_path / "ops.toml"
    ops_file.write_text('backup_dir = "/srv/backups"\nbackup_generations = 3\n')
    env = {"MIMAMORI_BACKUP_GENERATIONS": "4", "MIMAMORI_COMPONENTS": "database, web"}
    ops = OpsSettings.load(ops_file, env=env)
    assert (ops.backup_dir, ops.backup_generations) == ("/srv/backups", 4)
    assert ops.components == ("database", "web")


def test_every_setting_is_documented_in_one_place():
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(MIMAMORI_[A-Z0-9_]+)`", doc))
    wanted = {variable(f) for cls in CLASSES for f in dataclasses.fields(cls)} | {
        "MIMAMORI_ENV_FILE",
        "MIMAMORI_INSTANCE_FILE",
        "MIMAMORI_OPS_FILE",
    }
    assert sorted(wanted - documented) == []


def test_a_secret_comes_from_its_file_option_or_the_environment_and_nowhere_else(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("from-the-file\n")
    env_file = tmp_path / "mimamori.env"
    env_file.write_text("MIMAMORI_INGEST_MQTT_PASSWORD=from-the-env-file\n")
    variable, option = "MIMAMORI_INGEST_MQTT_PASSWORD", "--password-file"
    assert secret(pw, variable, option, env={}) == "from-the-file"
    assert secret(None, variable, option, env={"MIMAMORI_ENV_FILE": str(env_file)}) == (
        "from-the-env-file"
    )
    with pytest.raises(ConfigError, match=r"\$MIMAMORI_INGEST_MQTT_PASSWORD is not set .*--pass"):
        secret(None, variable, option, env={})
    with pytest.raises(ConfigError, match="--password-file: "):
        secret(tmp_path / "missing", variable, option, env={})
