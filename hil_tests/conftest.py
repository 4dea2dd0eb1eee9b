"""Session fixtures of the HIL suite: broker, SMTP server, cloud, sensor bus, DUT.

One broker (terminals on its TLS listener), one SMTP server, one SNTP server
and one cloud (ingest + notify + sweep on SQLite) serve the whole session, as
they would serve a fleet; the board bundle is built once. Each test gets fresh
simulated sensors and a DUT with a terminal id of its own (so alarms, mails
and samples of one scenario never mix with another's).

``dut`` runs every scenario twice: ``virtual`` (the agent on CPython) and
``board`` (the board build under MicroPython: the virtual board, or the real
board and RS-485 adapter of ``hil_tests/hardware.toml``; see
``hardware.example.toml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.broker import account_from_row
from hil_tests import hardware as hw
from hil_tests.cloud import INGEST_PASSWORD, INGEST_USER, Cloud
from hil_tests.dut import BoardDut, SensorBus, VirtualDut
from hil_tests.forward import Forwarder
from tests.support.broker import HOST, MosquittoBroker
from tests.support.smtp import SmtpSink
from tests.support.virtual_terminal import password

# board_bundle and sntp (the bench's time server, the virtual board's ntp.bench)
# are shared with the installer's journey in tests/integration.
pytest_plugins = ["tests.support.board_fixtures"]

TIDS = [f"HIL{i:02d}" for i in range(1, 41)]
DUT_KINDS = ["virtual", "board"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "board: needs a real board (hil_tests/hardware.toml)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.hil)


@pytest.fixture(scope="session")
def hardware() -> hw.Hardware | None:
    """The bench from hardware.toml, or None (virtual terminals only)."""
    return hw.load()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    accounts = [account_from_row(INGEST_USER, INGEST_PASSWORD, "ingest")]
    accounts += [account_from_row(t, password(t), "terminal") for t in TIDS]
    # Unlimited queues for the ingest session: the shipped 1000-message cap is
    # about protecting the broker, not what these scenarios check.
    with MosquittoBroker(
        tmp_path_factory.mktemp("hil-broker"),
        accounts,
        tls=True,
        max_queued_messages=0,
        max_queued_bytes=0,
    ) as b:
        yield b


@pytest.fixture(scope="session")
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def cloud(
    broker: MosquittoBroker, smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    with Cloud(tmp_path_factory.mktemp("hil-cloud"), broker, smtp.port) as c:
        yield c


@pytest.fixture(scope="session")
def _tids() -> Iterator[str]:
    return iter(TIDS)


@pytest.fixture(scope="session")
def board_link(hardware: hw.Hardware | None, broker: MosquittoBroker) -> Iterator[None]:
    """The bench network's way to the loopback broker (board variant only)."""
    if hardware is None:
        yield None
        return
    with Forwarder(hardware.broker_host, hardware.broker_port, HOST, broker.ports["terminal_tls"]):
        yield None


@pytest.fixture(params=DUT_KINDS)
def dut_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def bus(dut_kind: str, hardware: hw.Hardware | None) -> Iterator[SensorBus]:
    """Simulated sensors: a pty (for a virtual DUT or the virtual board), or the
    RS-485 adapter wired to a real board."""
    if dut_kind == "board" and hardware is not None:
        with SensorBus(hardware.adapter_port, hardware.adapter_baud) as b:
            yield b
    else:
        with SensorBus() as b:
            yield b


@pytest.fixture
def dut(  # noqa: PLR0917
    request: pytest.FixtureRequest,
    dut_kind: str,
    bus: SensorBus,
    broker: MosquittoBroker,
    cloud: Cloud,
    hardware: hw.Hardware | None,
    _tids: Iterator[str],
    board_link: None,
    tmp_path: Path,
) -> Iterator[VirtualDut]:
    """The device under test, not yet powered on (``dut.boot()``)."""
    tid = next(_tids, None)
    assert tid is not None, f"more DUTs than the {len(TIDS)} broker accounts of the suite"
    if dut_kind == "board":
        device: VirtualDut = BoardDut(
            tid,
            tmp_path,
            broker,
            bus,
            bundle=request.getfixturevalue("board_bundle"),
            ntp_port=request.getfixturevalue("sntp").port,
            hardware=hardware,
        )
    else:
        device = VirtualDut(tid, tmp_path, broker, bus)
    try:
        yield device
    finally:
        device.close()
        cloud.forget_config(tid)
    cloud.check()
