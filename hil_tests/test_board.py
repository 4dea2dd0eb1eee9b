"""The bench itself: hardware.toml as documented, and the board build commissioned.

The board check runs on the board variant of the DUT: the virtual board by
default, the real board of ``hil_tests/hardware.toml`` on a bench.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil_tests import hardware as hw
from hil_tests.cloud import Cloud
from hil_tests.dut import BoardDut, VirtualDut
from hil_tests.steps import addresses, commission, wait_sample

DE_PIN = 4  # the RS-485 driver enable of the board.json default wiring
MODBUS_UART = "2"


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


@pytest.mark.parametrize("dut_kind", ["board"])
def test_board_build_runs_micropython_and_drives_rs485_enable(
    cloud: Cloud, dut: VirtualDut
) -> None:
    assert isinstance(dut, BoardDut)
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "bench")])
    fw = cloud.terminal(dut.tid).firmware_version or ""
    assert fw.split()[1] == "micropython", fw  # the board build, not the CPython agent
    wait_sample(cloud, dut, "th1.t", lambda p: True, "a temperature over the RS-485 bus")
    if dut.board is None:
        return  # a real bench: the enable pin is on the scope, not in a log
    log = dut.board.control(cmd="log")
    uart = log["uart"][MODBUS_UART]
    assert len(uart["tx"]) >= 4 and uart["overflow"] == 0
    # every request is framed by the enable pin: on before its first start bit,
    # off only after its last stop bit (txdone), so no byte is cut short
    de = [(t, level) for t, pin, level in log["pins"] if pin == DE_PIN]
    for t0, t1, _n in uart["tx"]:
        on = [t for t, level in de if level == 1 and t <= t0]
        assert on, f"driver not enabled before the request at {t0}"
        off = [t for t, level in de if level == 0 and t > on[-1]]
        assert off and off[0] >= t1, f"driver released before the request at {t0} was out"
