"""Operations settings: defaults, the TOML file, and refusals of bad values."""

from __future__ import annotations

import pytest

from cloud.errors import ConfigError
from cloud.ops.settings import DEFAULT_PLANS, OpsSettings, Plan


def test_defaults_are_the_documented_promises():
    ops = OpsSettings()
    assert (ops.backup_generations, ops.log_online_months, ops.log_archive_months) == (2, 3, 12)
    assert ops.tax_rate_percent == 10 and ops.zone == "Asia/Tokyo"
    assert ops.plans["standard"] == Plan("standard", 3000, 10000, 10)


def test_file_with_plans_and_lists(tmp_path):
    path = tmp_path / "ops.toml"
    path.write_text(
        'backup_generations = 7\ncomponents = ["database", "web"]\ncheck_timeout_s = 2\n'
        "[plans.lite]\nmonthly_fee = 1980\nregistration_fee = 0\nnotification_fee = 20\n",
        encoding="utf-8",
    )
    ops = OpsSettings.load(path)
    assert ops.backup_generations == 7 and ops.components == ("database", "web")
    assert ops.check_timeout_s == 2.0
    assert dict(ops.plans) == {"lite": Plan("lite", 1980, 0, 20)}


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
        ("[plans.x]\nmonthly_fee = 1.5\nregistration_fee = 0\nnotification_fee = 0", "whole yen"),
        ("[plans.x]\nmonthly_fee = 1", "needs exactly"),
        ("lease_ttl_s = 2", "at least 3"),
    ],
)
def test_bad_values_are_refused_with_their_name(tmp_path, text, message):
    path = tmp_path / "ops.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        OpsSettings.load(path)


def test_prices_are_whole_yen_never_floats_or_bools():
    with pytest.raises(ConfigError):
        Plan("p", monthly_fee=True, registration_fee=0, notification_fee=0)  # type: ignore[arg-type]
    assert all(type(p.monthly_fee) is int for p in DEFAULT_PLANS.values())
