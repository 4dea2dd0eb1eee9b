"""What flash decides before and while it writes: board compatibility, room, write order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge.installer import bundle, flash
from edge.installer.errors import BoardError

MANIFEST = {"mpy_version": "6.3", "mpy_cross": "MicroPython v1.29.0; mpy-cross emitting mpy v6.3"}


def info(mpy: int = 0x306, free: int = 1 << 20, name: str = "micropython") -> dict:
    return {"name": name, "version": "v1.27.0", "platform": "esp32", "mpy": mpy, "free": free}


def test_a_compatible_board_with_room_passes() -> None:
    flash.check_board(info(), MANIFEST, need=50_000)
    flash.check_board(
        info(mpy=0x306 | (10 << 10)), MANIFEST, need=1
    )  # arch bits (xtensawin) ignored
    flash.check_board(info(free=-1), MANIFEST, need=10**9)  # board cannot tell: not refused
    # the copies an update left in ota/ are removed before writing: their room counts
    flash.check_board(info(free=4096), MANIFEST, need=50_000, freed=45_904)


@pytest.mark.parametrize(
    ("board", "message"),
    [
        (
            info(mpy=0x206),
            "the board loads .mpy v6.2 but the bundle is v6.3 (MicroPython v1.29.0; "
            "mpy-cross emitting mpy v6.3): update the board's MicroPython or build with a "
            "matching mpy-cross",
        ),
        (info(mpy=0x005), "the board loads .mpy v5.0 but the bundle is v6.3"),
        (info(mpy=0), "the board does not report its .mpy version: its MicroPython is too old"),
        (info(name="circuitpython"), "the board runs circuitpython, not MicroPython"),
        (info(free=4096), "not enough flash on the board: 50000 bytes to write, 4096 free"),
    ],
)
def test_boards_that_cannot_take_the_bundle_are_refused(board: dict, message: str) -> None:
    with pytest.raises(BoardError) as err:
        flash.check_board(board, MANIFEST, need=50_000)
    assert str(err.value).startswith(message)


def test_plan_writes_main_py_last_and_hashes_the_site(tmp_path: Path) -> None:
    out = tmp_path / "b"
    manifest = bundle.build(out)
    site = b'{"terminal_id": "T1"}'
    items = flash.plan(out, manifest, site)
    paths = [p for p, _, _ in items]
    assert paths[-3:] == ["site.json", "manifest.json", "main.py"]
    assert sorted(paths[:-3]) == sorted(p for p in manifest["files"] if p != "main.py")
    for path, data, sha in items:
        assert hashlib.sha256(data).hexdigest() == sha, path
    assert [p for p, _, _ in flash.plan(out, manifest, None)][-2:] == ["manifest.json", "main.py"]
