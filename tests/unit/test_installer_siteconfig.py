"""The site file is checked with the terminal's own validator, and never leaks its password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.installer import siteconfig
from edge.installer.errors import SiteConfigError, UsageError
from tests.support.installer import write_site

PASSWORD = "pw-SECRET-0001"


def test_a_valid_site_file_gives_its_exact_bytes_and_content(tmp_path: Path) -> None:
    path = write_site(tmp_path / "site.json")
    raw, site = siteconfig.load(path)
    assert raw == path.read_bytes()  # flashed byte for byte, so hashes compare
    assert site["terminal_id"] == "T0001"
    assert siteconfig.BOARD_PATH == "site.json"


def test_it_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        siteconfig.load(tmp_path / "nope.json")
    assert err.value.exit_status == 2
    assert str(err.value) == "site file %s does not exist" % (tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"terminal_id": "T 1"}, "terminal_id: may only contain A-Z a-z 0-9 _ -"),
        ({"broker": {"port": 1883}}, "broker.host: is required"),
        ({"broker": {"host": "h", "port": 70000}}, "broker.port: must be an integer 1..65535"),
        ({"credentials": {"username": "T0001"}}, "credentials.password: is required"),
        (
            {"credentials": {"username": "OTHER", "password": PASSWORD}},
            "credentials.username: must equal terminal_id",
        ),
        (
            {"wiring": [{"unit": 0, "profile": "IM-100"}]},
            "wiring[0].unit: must be an integer 1..247",
        ),
        ({"wiring": [{"unit": 1, "profile": "XX-9"}]}, "wiring[0].profile: unknown sensor profile"),
        (
            {"wiring": [{"unit": 1, "profile": "IM-100"}, {"unit": 1, "profile": "TH-10"}]},
            "wiring[1].unit: unit 1 is wired twice",
        ),
        ({"pasword": PASSWORD}, "pasword: unknown key"),
    ],
)
def test_bad_values_name_the_key_never_the_password(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    path = write_site(tmp_path / "site.json", **overrides)
    with pytest.raises(SiteConfigError) as err:
        siteconfig.load(path)
    assert str(err.value) == "%s: %s" % (path, message)
    assert PASSWORD not in str(err.value)


def test_missing_keys_are_listed_together(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"terminal_id": "T0001"}))
    with pytest.raises(
        SiteConfigError, match=r"missing required key\(s\): broker, credentials, wiring$"
    ):
        siteconfig.load(path)
    path.write_text("[1, 2]")
    with pytest.raises(SiteConfigError, match="top level must be a JSON object"):
        siteconfig.load(path)


def test_broken_json_gives_a_position_not_an_excerpt(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text('{"terminal_id": "T0001",\n "credentials": {"password": "%s" "x"}}' % PASSWORD)
    with pytest.raises(SiteConfigError) as err:
        siteconfig.load(path)
    assert "is not valid JSON (line 2, column" in str(err.value)
    assert PASSWORD not in str(err.value)
    path.write_bytes(b'{"terminal_id": "\xff"}')
    with pytest.raises(SiteConfigError, match="is not UTF-8 text"):
        siteconfig.load(path)
