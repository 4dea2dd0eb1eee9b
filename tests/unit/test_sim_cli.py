"""Command-line parsing of python -m firmware_sim (the serving itself is integration)."""

from __future__ import annotations

import io

import pytest

from firmware_sim.cli import main, parse_address, parse_device
from firmware_sim.errors import ConfigError


def test_device_specs():
    assert parse_device("insulation:1") == ("insulation", 1, {})
    assert parse_device("meter-cdab:0x10") == ("meter-cdab", 16, {})
    assert parse_device("meter:2:peak_kw=150,e0=1000.5") == (
        "meter",
        2,
        {"peak_kw": 150.0, "e0": 1000.5},
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("insulation", "KIND:UNIT"),
        ("kettle:1", "unknown device kind"),
        ("thermo:x", "not a number"),
        ("thermo:1:offset", "NAME=VALUE"),
        ("thermo:1:offset=warm", "not a number"),
    ],
)
def test_bad_device_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_device(spec)


def test_addresses():
    assert parse_address("127.0.0.1:5020") == ("127.0.0.1", 5020)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("5020", "host:", "host:99999", ":80"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_kinds_lists_every_model():
    out = io.StringIO()
    assert main(["kinds"], out=out) == 0
    text = out.getvalue()
    for name in ("IM-100 (reference)", "PM-310 (test)", "SDM630: kind meter", "e0=auto"):
        assert name in text
    assert "  kw   FC4 @52    f32 ABCD x0.001 kW" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--device", "thermo:1"], "at least one link"),
        (["serve", "--pty", "--device", "thermo:1", "--device", "di:1"], "already used"),
        (["serve", "--pty", "--device", "thermo:300"], "unit id"),
        (["serve", "--pty", "--device", "thermo:1:peak_kw=3"], "unknown parameter"),
        (["serve", "--port", "/nonexistent/tty", "--device", "thermo:1"], "nonexistent"),
    ],
)
def test_startup_errors_exit_2_with_one_line(argv, message, capsys):
    out = io.StringIO()
    assert main(argv, out=out) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert "ready" not in out.getvalue()
