"""``hil_tests/hardware.toml``: the bench a board variant runs on.

The file is per bench and untracked (copy ``hardware.example.toml``). Absent:
only the virtual DUT runs and the board-only checks say that no board is
configured. Present: every value is checked here, so a typo fails the
session at start with the key's name instead of a timeout later.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARDWARE_FILE = HERE / "hardware.toml"
NO_BOARD = "no board configured: hil_tests/hardware.toml is absent"


class HardwareError(ValueError):
    """hardware.toml is unreadable or a value in it is wrong."""


@dataclass(frozen=True)
class Hardware:
    board_port: str  # the board's REPL (USB serial), for mpremote
    board_baud: int
    adapter_port: str  # the RS-485 adapter the simulated sensors answer on
    adapter_baud: int
    broker_host: str  # the address the board reaches this PC's broker at
    broker_port: int  # port forwarded there to the suite's loopback broker


def load(path: Path = HARDWARE_FILE) -> Hardware | None:
    """The bench, or None when ``path`` does not exist. Raises HardwareError."""
    if not path.exists():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        board, bus, net = data["board"], data["bus"], data["network"]
        hw = Hardware(
            board_port=str(board["port"]),
            board_baud=int(board.get("baud", 115200)),
            adapter_port=str(bus["adapter"]),
            adapter_baud=int(bus.get("baudrate", 9600)),
            broker_host=str(net["broker_host"]),
            broker_port=int(net.get("broker_port", 18830)),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as err:
        raise HardwareError(f"{path}: {err!r}") from err
    for name in ("board_port", "adapter_port"):
        if not Path(getattr(hw, name)).exists():
            raise HardwareError(f"{path}: {name} {getattr(hw, name)} does not exist")
    if not 0 < hw.broker_port < 65536:
        raise HardwareError(f"{path}: network.broker_port {hw.broker_port} out of range")
    return hw
