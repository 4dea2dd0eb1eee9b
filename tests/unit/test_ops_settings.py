"""Operations settings: defaults, the TOML file, and refusals of bad values."""

from __future__ import annotations

import pytest

from cloud.errors import ConfigError
from cloud.ops.settings import OpsSettings


def test_defaults_are_the_documented_promises():
    ops = OpsSettings()
    assert (ops.backup_generations, ops.log_online_months, ops.log_archive_months) == (2, 3, 12)
    assert ops.tax_rate_percent == 10 and ops.zone == "Asia/Tokyo"


def test_file_with_lists(tmp_path):
    path = tmp_path / "ops.toml"
    path.write_text(
        'backup_generations = 7\ncomponents = ["database", "web"]\ncheck_timeout_s = 2\n',
        encoding="utf-8",
    )
    ops = OpsSettings.load(path)
    assert ops.backup_generations == 7 and ops.components == ("database", "web")
    assert ops.check_timeout_s == 2.0


def test_missing_default_file_gives_defaults_but_a_named_one_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert OpsSettings.load(env={}) == OpsSettings()
    with pytest.raises(ConfigError, match="does not exist"):
        OpsSettings.load(env={"MIMAMORI_OPS_FILE": str(tmp_path / "nope.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("backup_generation = 2", "unknown setting 'backup_generation'"),
        ("backup_generations = 0", "backup_generations"),
        ('backup_generations = "2"', "must be int"),
        ("tax_rate_percent = 10.5", "must be int"),
        ('components = ["database", "mail"]', "unknown"),
        ('backup_at = "25:00"', "time of day"),
        ('zone = "Mars/Olympus"', "unknown time zone"),
        ("[plans.x]\nmonthly_fee = 1", "price list"),  # prices moved to the database
        ("lease_ttl_s = 2", "at least 3"),
    ],
)
def test_bad_values_are_refused_with_their_name(tmp_path, text, message):
    path = tmp_path / "ops.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        OpsSettings.load(path)
