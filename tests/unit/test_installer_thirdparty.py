"""Third-party device modules: the pinned archive or nothing, and the board's extra files."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from edge.installer import flash, thirdparty
from edge.installer.errors import BuildError, SiteConfigError


def archive(tmp_path: Path, source: bytes) -> Path:
    path = tmp_path / "micropython-umqtt.simple-9.9.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("micropython-umqtt.simple-9.9/umqtt/simple.py")
        info.size = len(source)
        tar.addfile(info, io.BytesIO(source))
    path.write_bytes(buf.getvalue())
    return path


def test_an_archive_matching_the_pin_gives_its_module(tmp_path: Path) -> None:
    path = archive(tmp_path, b"class MQTTClient:\n    pass\n")
    pkg = {**thirdparty.UMQTT, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert thirdparty.umqtt_source(path, pkg) == b"class MQTTClient:\n    pass\n"


def test_an_archive_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    path = archive(tmp_path, b"print('not umqtt')\n")
    with pytest.raises(BuildError, match="SHA-256 differs"):
        thirdparty.umqtt_source(path)


def test_board_config_is_checked_before_the_board_is_touched(tmp_path: Path) -> None:
    good = tmp_path / "board.json"
    good.write_text(json.dumps({"wlan": {"ssid": "site", "password": "pw"}, "mqtt_timeout": 5}))
    assert flash.load_board_config(good) == good.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"wifi": {}}))
    with pytest.raises(SiteConfigError, match="unknown key"):
        flash.load_board_config(bad)
    bad.write_text(json.dumps({"wlan": {"password": "pw"}}))
    with pytest.raises(SiteConfigError, match="wlan needs an ssid"):
        flash.load_board_config(bad)
    with pytest.raises(SiteConfigError, match="not a PEM certificate"):
        flash.load_ca(good)
