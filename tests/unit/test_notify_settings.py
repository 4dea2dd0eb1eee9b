"""Retry policy and worker settings: backoff arithmetic and refusing bad values."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloud.errors import ConfigError
from cloud.notify.settings import NotifySettings, RetryPolicy


def test_backoff_doubles_up_to_the_cap_then_gives_up():
    p = RetryPolicy(base_s=60, factor=2, max_delay_s=600, max_attempts=6)
    delays = [p.delay(n) for n in range(1, 7)]
    assert delays == [timedelta(seconds=s) for s in (60, 120, 240, 480, 600)] + [None]


def test_the_default_policy_keeps_alarm_mail_through_a_three_day_outage():
    p = RetryPolicy()
    waited = timedelta(0)
    attempts = 1
    while (delay := p.delay(attempts)) is not None:
        waited += delay
        attempts += 1
    assert timedelta(days=3) <= waited <= timedelta(days=4)
    assert p.delay(1) == timedelta(minutes=1)  # a short glitch still costs a minute only


@pytest.mark.parametrize(
    "kw",
    [
        {"base_s": 0},
        {"factor": 0.5},
        {"max_attempts": 0},
        {"lease_s": 0},
        {"base_s": 100, "max_delay_s": 50},
    ],
)
def test_bad_retry_policies_are_refused(kw):
    with pytest.raises(ConfigError):
        RetryPolicy(**kw)


def test_settings_from_environment_with_overrides():
    env = {
        "MIMAMORI_SMTP_HOST": "mail.example.com",
        "MIMAMORI_SMTP_PORT": "587",
        "MIMAMORI_SMTP_SECURITY": "starttls",
        "MIMAMORI_SMTP_USER": "u",
        "MIMAMORI_SMTP_PASSWORD": "hunter2-xyzzy",
    }
    s = NotifySettings.from_env(env, smtp_port=2525, mail_from=None)
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("mail.example.com", 2525, "starttls")
    assert s.smtp_password == "hunter2-xyzzy"
    assert "hunter2" not in repr(s)  # settings get logged; the password must not


@pytest.mark.parametrize(
    "kw",
    [
        {"smtp_port": 0},
        {"smtp_security": "tls"},
        {"smtp_user": "u"},
        {"mail_from": "nobody"},
        {"message_id_domain": "a@b"},
        {"smtp_timeout_s": 0},
        {"webhook_concurrency": 0},
        {"webhook_per_customer": 0},
        {"webhook_concurrency": 2, "webhook_per_customer": 3},
    ],
)
def test_bad_settings_are_refused(kw):
    with pytest.raises(ConfigError):
        NotifySettings(**kw)


def test_bad_numbers_in_the_environment_name_the_variable():
    with pytest.raises(ConfigError, match="MIMAMORI_SMTP_PORT"):
        NotifySettings.from_env({"MIMAMORI_SMTP_PORT": "twenty-five"})
