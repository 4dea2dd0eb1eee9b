"""`mimamori-install build` then `flash` to a virtual MicroPython board on a pty.

The board is the real MicroPython 1.27 (WebAssembly port) behind its real
REPL (tools/virtual_board.mjs); the tool drives it through mpremote over a
real pty, exactly as it drives a USB-connected ESP32.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.installer.board import Board
from tests.support.installer import run_tool, sha256, write_site
from tests.support.virtual_board import VirtualBoard

pytestmark = pytest.mark.integration

PASSWORD = "pw-SECRET-0001"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "bundle"
    result = run_tool("build", "--out", str(out))
    assert result.status == 0, result.err
    return out


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    with VirtualBoard(flash_dir=tmp_path / "flash") as vb:
        yield vb


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_flash_copies_and_verifies_every_file(
    bundle_dir: Path, board: VirtualBoard, tmp_path: Path
) -> None:
    site = write_site(tmp_path / "site.json")
    result = run_tool(
        "flash", "--port", board.port, "--bundle", str(bundle_dir), "--site", str(site)
    )
    assert result.status == 0, result.err
    files = manifest_of(bundle_dir)["files"]
    expected = [*files, "site.json", "manifest.json"]
    # progress: one copy and one verify line per file, the board read back as ok
    for rel in expected:
        assert re.search(
            r"copy +\[ *\d+/%d\] %s +\d+ B  written" % (len(expected), re.escape(rel)), result.out
        ), rel
        assert re.search(
            r"verify \[ *\d+/%d\] %s +ok" % (len(expected), re.escape(rel)), result.out
        ), rel
    assert "%d files verified" % len(expected) in result.out
    assert "MicroPython v1.27" in result.out
    assert PASSWORD not in result.out + result.err

    board.stop()
    on_board = board.files()
    assert sorted(on_board) == sorted(expected)
    for rel, entry in files.items():
        assert sha256(on_board[rel]) == entry["sha256"], rel
    assert on_board["site.json"] == site.read_bytes()
    assert on_board["manifest.json"] == (bundle_dir / "manifest.json").read_bytes()


def test_flashed_modules_load_on_the_board(bundle_dir: Path, board: VirtualBoard) -> None:
    result = run_tool("flash", "--port", board.port, "--bundle", str(bundle_dir), "--no-reset")
    assert result.status == 0, result.err
    modules = sorted(
        rel[: -len(".mpy")].replace("/", ".").removesuffix(".__init__")
        for rel in manifest_of(bundle_dir)["files"]
        if rel.endswith(".mpy")
    )
    # every device module imports on the board from its .mpy (nothing else is there)
    with Board(board.port) as b:
        assert b.files_under("edge") == sorted(
            rel for rel in manifest_of(bundle_dir)["files"] if rel.startswith("edge/")
        )
        failed = b.eval(
            "import sys\n"
            "bad = []\n"
            "for m in %r:\n"
            "    try:\n"
            "        __import__(m)\n"
            "    except Exception as e:\n"
            "        bad.append((m, repr(e)))\n"
            "print(repr(bad))" % modules
        )
        out = b.exec(
            "from protocol import frames, topics\n"
            "print(frames.__file__, topics.uplink('T0001', 'data'))"
        )
    assert failed == []
    assert out.split() == ["protocol/frames.mpy", "mm/v1/T0001/up/data"]


def test_site_profiles_reach_the_board_and_load_there(
    bundle_dir: Path, board: VirtualBoard, tmp_path: Path
) -> None:
    """A JSON profile beside the site file and a TOML one given on the command line."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "XY-X100.json").write_text(
        json.dumps(
            {
                "model": "XY-X100",
                "points": [
                    {"name": "t", "fc": 4, "addr": 1, "type": "s16", "exp": -2, "unit": "degC",
                     "kind": "temperature"}
                ],
            }
        )
    )  # fmt: skip
    toml = tmp_path / "PUMP-DI.toml"
    toml.write_text(
        'model = "PUMP-DI"\n[[points]]\nname = "run"\nfc = 2\naddr = 0\ntype = "bit"\n'
        'kind = "contact"\n'
    )
    wiring = [
        {"unit": 3, "profile": "XY-X100", "name": "room"},
        {"unit": 4, "profile": "PUMP-DI", "name": "pump"},
        {"unit": 5, "profile": "SDM630", "name": "main"},
    ]
    site = write_site(tmp_path / "site.json", wiring=wiring)
    result = run_tool(
        "flash", "--port", board.port, "--bundle", str(bundle_dir), "--site", str(site),
        "--profile", str(toml), "--no-reset",
    )  # fmt: skip
    assert result.status == 0, result.err
    assert re.search(r"verify \[ *\d+/\d+\] profiles/PUMP-DI\.json +ok", result.out)
    with Board(board.port) as b:
        assert b.files_under("profiles") == ["profiles/PUMP-DI.json", "profiles/XY-X100.json"]
        # the terminal's own loader, on the board: site files and the bundle's built-in map
        loaded = b.eval(
            "from edge import profiles\n"
            "t = profiles.profile_table(None, ['XY-X100', 'PUMP-DI', 'SDM630'], 'profiles')\n"
            "print(repr(sorted((m, len(p['points'])) for m, p in t.items())))"
        )
    assert loaded == [("PUMP-DI", 1), ("SDM630", 10), ("XY-X100", 1)]


def test_a_wiring_naming_a_profile_nobody_has_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.json", wiring=[{"unit": 3, "profile": "XY-X100"}])
    result = run_tool(
        "flash", "--port", "/dev/null", "--bundle", str(bundle_dir), "--site", str(site)
    )
    assert result.status == 2
    assert "wiring[0].profile: unknown sensor profile" in result.err


def test_second_flash_copies_nothing_and_removes_stale_modules(
    bundle_dir: Path, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    with VirtualBoard(flash_dir=flash) as vb:
        assert run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir)).status == 0
    # an old release left a source module (it would shadow the new .mpy), a
    # module that no longer exists, and the agent's data next to them
    (flash / "edge" / "config.py").write_text("raise ImportError('stale')\n")
    (flash / "protocol" / "gone.mpy").write_bytes(b"M\x06old")
    (flash / "edge" / "queue.bin").write_bytes(b"\x00" * 16)
    with VirtualBoard(flash_dir=flash) as vb:
        result = run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir))
        assert result.status == 0, result.err
        assert "removed stale edge/config.py" in result.out
        assert "removed stale protocol/gone.mpy" in result.out
        written = re.findall(r" written$", result.out, re.M)
        assert len(written) == 1  # main.py: removed first, written last
        assert re.search(r"main\.py +\d+ B  written", result.out)
        again = run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir))
        assert again.status == 0, again.err
        assert ", 0 written, 0 removed" in again.out
    names = {p.relative_to(flash).as_posix() for p in flash.rglob("*") if p.is_file()}
    assert "edge/config.py" not in names and "protocol/gone.mpy" not in names
    assert "edge/queue.bin" in names


def test_flash_removes_the_state_of_over_the_air_updates(bundle_dir: Path, tmp_path: Path) -> None:
    """A terminal updated over the air is reinstalled by cable: ota/ goes
    (the loader's boot.json naming slot a, a job half done, both slots), so
    the loader starts the flashed copy, not the older update."""
    flash = tmp_path / "flash"
    ota = flash / "ota"
    (ota / "a" / "edge").mkdir(parents=True)
    (ota / "b").mkdir()
    (ota / "boot.json").write_text(json.dumps({"slot": "a", "try": None, "failed": None}))
    (ota / "job.json").write_text(json.dumps({"job": 7, "slot": "b", "state": "download"}))
    (ota / "a" / "edge" / "agent.mpy").write_bytes(b"M\x06old")
    (ota / "b" / "manifest.sig").write_bytes(b"{")
    (flash / "edge").mkdir()
    (flash / "edge" / "queue.bin").write_bytes(b"\x00" * 16)  # the outbox stays
    with VirtualBoard(flash_dir=flash) as vb:
        result = run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir), "--no-reset")
        assert result.status == 0, result.err
        assert "removed ota/ (4 files: the state and copies of over-the-air updates)" in result.out
        assert "over-the-air update state removed (4 files in ota/)" in result.out
        with Board(vb.port) as b:
            assert b.files_under("ota") == []
            assert b.eval("import main\nprint(repr(main.choose()))") == ("", False)
    assert not ota.exists()
    assert (flash / "edge" / "queue.bin").exists()


def test_a_file_the_board_stores_wrongly_fails_verification(
    bundle_dir: Path, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    # boot.py runs at every soft reset: it makes the board's flash flip the
    # bits of everything written to edge/alarms.mpy, like a failing sector
    (flash / "boot.py").write_text(
        "import builtins\n"
        "_open = builtins.open\n"
        "class _Bad:\n"
        "    def __init__(self, f):\n"
        "        self.f = f\n"
        "    def write(self, b):\n"
        "        return self.f.write(bytes([x ^ 0xFF for x in b]))\n"
        "    def close(self):\n"
        "        self.f.close()\n"
        "def _bad_open(p, m='r'):\n"
        "    f = _open(p, m)\n"
        "    return _Bad(f) if p.endswith('alarms.mpy') and 'w' in m else f\n"
        "builtins.open = _bad_open\n"
    )
    with VirtualBoard(flash_dir=flash) as vb:
        result = run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir))
    assert result.status == 1
    assert re.search(r"verify \[ *\d+/\d+\] edge/alarms\.mpy +MISMATCH", result.out)
    assert "files on the board do not match the bundle: edge/alarms.mpy;" in result.err
    assert "board restarted" not in result.out


def test_a_corrupted_bundle_is_refused_before_the_board_is_touched(
    bundle_dir: Path, board: VirtualBoard, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    target = bad / "protocol" / "cbor.mpy"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x40
    target.write_bytes(bytes(data))
    result = run_tool("flash", "--port", board.port, "--bundle", str(bad))
    assert result.status == 1
    assert "does not match its manifest (changed: protocol/cbor.mpy)" in result.err
    assert result.err.count("\n") == 1  # one line
    board.stop()
    assert board.files() == {}


def test_a_bad_site_file_is_a_usage_error_and_never_shown(
    bundle_dir: Path, board: VirtualBoard, tmp_path: Path
) -> None:
    site = write_site(
        tmp_path / "site.json", credentials={"username": "T0002", "password": PASSWORD}
    )
    result = run_tool(
        "flash", "--port", board.port, "--bundle", str(bundle_dir), "--site", str(site)
    )
    assert result.status == 2
    assert "credentials.username: must equal terminal_id" in result.err
    broken = tmp_path / "broken.json"
    broken.write_text('{"terminal_id": "T0001", "credentials": {"password": "%s",}}' % PASSWORD)
    result = run_tool(
        "flash", "--port", board.port, "--bundle", str(bundle_dir), "--site", str(broken)
    )
    assert result.status == 2
    assert "is not valid JSON (line 1, column" in result.err
    assert PASSWORD not in result.out + result.err
    board.stop()
    assert board.files() == {}


def test_a_missing_port_is_named(bundle_dir: Path, tmp_path: Path) -> None:
    port = str(tmp_path / "ttyUSB9")
    result = run_tool("flash", "--port", port, "--bundle", str(bundle_dir))
    assert result.status == 1
    assert result.err.strip() == "mimamori-install flash: error: no such port %s" % port


def test_a_silent_port_times_out_with_a_hint(bundle_dir: Path) -> None:
    master, slave = os.openpty()  # nobody answers on the other side
    tty.setraw(slave)
    try:
        result = run_tool(
            "flash",
            "--port",
            os.ttyname(slave),
            "--bundle",
            str(bundle_dir),
            "--timeout",
            "2",
            timeout=30,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert result.status == 1
    assert "does not answer (no reply within 2 s)" in result.err
    assert "boot loop" in result.err and "--baud" in result.err
    assert 2 <= result.seconds < 2 + 5  # the timeout, a read timeout, interpreter start


def test_a_board_without_room_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    with VirtualBoard(flash_dir=tmp_path / "flash", flash_size=16384) as vb:
        result = run_tool("flash", "--port", vb.port, "--bundle", str(bundle_dir))
    assert result.status == 1
    assert re.search(r"not enough flash on the board: \d+ bytes to write, \d+ free", result.err)
