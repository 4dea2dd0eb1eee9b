"""The command line: help, usage errors (exit 2), failures (exit 1, one line), order of checks."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from edge.installer import bundle
from edge.installer.cli import parse_bauds, parse_choice, parse_units
from tests.support.installer import run_tool, write_site


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("b") / "bundle"
    bundle.build(out)
    return out


def test_help_names_the_commands_and_their_options() -> None:
    top = run_tool("--help")
    assert top.status == 0
    for word in ("build", "flash", "probe", "mpy-cross", "mpremote", "SHA-256"):
        assert word in top.out
    for command, options in {
        "build": ["--out", "--source", "manifest.json"],
        "flash": [
            "--port",
            "--bundle",
            "--site",
            "--baud",
            "--timeout",
            "--force",
            "--no-reset",
            "password is never printed",
        ],
        "probe": [
            "--port",
            "--baud",
            "--parity",
            "--units",
            "--timeout-ms",
            "--profile",
            "--site",
            "--write",
            "--choose",
            "--accept-guesses",
            "FC 43/14",
            "80-480 V",
        ],
        "profile": ["check"],
        "profile check": ["--port", "--unit", "--baud", "raw words", "Exit 1"],
    }.items():
        result = run_tool(*command.split(), "--help")
        assert result.status == 0
        text = " ".join(result.out.split())
        for option in options:
            assert option in text, (command, option)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["flash"],
        ["probe"],
        ["probe", "--port", "p", "--units", "1-300"],
        ["probe", "--port", "p", "--baud", "fast"],
        ["probe", "--port", "p", "--baud", "9600,100"],
        ["probe", "--port", "p", "--choose", "3"],
        ["probe", "--port", "p", "--choose", "300=SDM630"],
        ["profile"],
        ["profile", "check"],
        ["profile", "check", "x.json", "--unit", "0"],
        ["flash", "--port", "p", "--timeout", "0"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run_tool(*args)
    assert result.status == 2
    assert result.err.startswith("usage: mimamori-install")
    assert result.out == ""


def test_parse_bauds_and_choices() -> None:
    assert parse_bauds("9600") == [9600]
    assert parse_bauds("19200,9600,19200") == [19200, 9600]
    assert parse_choice("3=XY-MD02") == (3, "XY-MD02")
    for bad in ("", "9600,", "fast", "100"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_bauds(bad)
    for bad in ("3", "=X", "0=X", "3="):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_choice(bad)


def test_parse_units() -> None:
    assert parse_units("1-3,7, 9-9") == [1, 2, 3, 7, 9]
    assert parse_units("247") == [247]
    assert parse_units("1-247") == list(range(1, 248))
    for bad in ("0", "248", "5-3", "a", "1-", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_units(bad)


def test_build_prints_progress_and_a_summary(tmp_path: Path) -> None:
    result = run_tool("build", "--out", str(tmp_path / "b"))
    assert result.status == 0, result.err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    n = len(bundle.device_files())
    assert (
        "[%d/%d] edge/config.py" % (bundle.device_files().index("edge/config.py") + 1, n)
        in result.out
    )
    assert (
        "bundle %s: firmware %s, %d files, id %s"
        % (
            tmp_path / "b",
            manifest["firmware_version"],
            n + len(bundle.data_files()) + 1,
            manifest["bundle_id"][:12],
        )
        in result.out
    )


def test_a_build_failure_is_one_line_and_exit_1(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "edge").mkdir(parents=True)
    (src / "edge" / "agent.py").write_text("def run(:\n")
    result = run_tool("build", "--source", str(src), "--out", str(tmp_path / "out"))
    assert result.status == 1
    assert result.err.startswith(
        "mimamori-install build: error: mpy-cross failed on edge/agent.py: "
    )
    assert result.err.count("\n") == 1


def test_flash_checks_the_site_file_before_the_port(bundle_dir: Path, tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.json", terminal_id="")
    result = run_tool(
        "flash", "--port", str(tmp_path / "nope"), "--bundle", str(bundle_dir), "--site", str(site)
    )
    assert result.status == 2
    assert "terminal_id" in result.err and "no such port" not in result.err


def test_flash_checks_the_bundle_before_the_port(bundle_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    (bad / "main.py").write_text("import os\n")
    result = run_tool("flash", "--port", str(tmp_path / "nope"), "--bundle", str(bad))
    assert result.status == 1
    assert "does not match its manifest (changed: main.py)" in result.err
    result = run_tool("flash", "--port", str(tmp_path / "nope"), "--bundle", str(tmp_path / "none"))
    assert result.status == 1
    assert "no bundle at %s: run 'mimamori-install build' first" % (tmp_path / "none") in result.err
