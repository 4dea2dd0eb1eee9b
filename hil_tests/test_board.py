"""The bench itself: hardware.toml as documented, and a real board commissioned.

The board checks need ``hil_tests/hardware.toml``; without it they say that
no board is configured (the scenarios still run on the virtual terminal).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests import hardware as hw
from hil_tests.cloud import Cloud
from hil_tests.dut import VirtualDut
from hil_tests.steps import addresses, commission


def test_example_bench_file_is_what_the_suite_reads(tmp_path: Path) -> None:
    board, adapter = tmp_path / "ttyBOARD", tmp_path / "ttyRS485"
    board.touch()
    adapter.touch()
    text = hw.HERE.joinpath("hardware.example.toml").read_text()
    text = text.replace("/dev/ttyUSB0", str(board)).replace("/dev/ttyUSB1", str(adapter))
    path = tmp_path / "hardware.toml"
    path.write_text(text)
    assert hw.load(path) == hw.Hardware(
        str(board), 115200, str(adapter), 9600, "192.168.1.10", 18830
    )
    path.write_text(text.replace(str(adapter), str(tmp_path / "gone")))
    with pytest.raises(hw.HardwareError, match=r"adapter_port .*gone does not exist"):
        hw.load(path)
    assert hw.load(tmp_path / "absent.toml") is None


@pytest.mark.board
def test_board_flashed_boots_and_reports(
    hardware: hw.Hardware | None, cloud: Cloud, dut: VirtualDut
) -> None:
    if hardware is None:
        pytest.skip(hw.NO_BOARD)
    if dut.kind != "board":
        pytest.skip("board check: runs on the board variant of the DUT")
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "bench")])
    assert cloud.terminal(dut.tid).firmware_version
