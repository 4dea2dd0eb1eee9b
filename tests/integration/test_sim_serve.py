"""The real ``python -m firmware_sim serve`` process over a pty and over TCP.

A pymodbus master reads every point of every model and checks the values are
plausible; then each fault is injected through the control socket and
observed on the wire; finally the process is stopped and must exit cleanly.
Replies inspected byte by byte use the test's own CRC (tests/support/sim.py).
"""

from __future__ import annotations

import os
import signal
import time
import tty

import pytest
from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from tests.support.sim import (
    Control,
    RawLine,
    SimProcess,
    crc_ok,
    join32,
    parse_reply,
    poll,
    read_request,
    s16,
    words,
)

pytestmark = pytest.mark.integration

DEVICES = ["insulation:1", "meter:2", "meter-cdab:3", "thermo:4", "di:5"]
ARGS = [
    "--pty",
    "--tcp",
    "127.0.0.1:0",
    "--control",
    "127.0.0.1:0",
    "--start",
    "2026-06-01T14:00",  # a Monday afternoon, JST
    "--speed",
    "60",
    "--seed",
    "5",
    *[arg for d in DEVICES for arg in ("--device", d)],
]


@pytest.fixture(scope="module")
def sim():
    with SimProcess(*ARGS) as proc:
        yield proc
        assert proc.stop() == 0, proc.stderr


@pytest.fixture
def control(sim):
    ctl = Control(sim.address("control"))
    yield ctl
    for unit in range(1, 6):  # leave the shared process as we found it
        ctl.ok(cmd="clear", unit=unit)
        ctl.ok(cmd="unset", unit=unit)
    ctl.ok(cmd="clock", speed=60)
    ctl.close()


def _client(sim, transport: str):
    if transport == "pty":
        client = ModbusSerialClient(
            sim.endpoints["pty"], framer=FramerType.RTU, baudrate=9600, timeout=1, retries=0
        )
    else:
        host, port = sim.address("tcp")
        client = ModbusTcpClient(host, port=port, framer=FramerType.RTU, timeout=1, retries=0)
    assert client.connect()
    return client


@pytest.fixture(params=["pty", "tcp"])
def transport(request):
    return request.param


@pytest.fixture
def client(sim, transport):
    c = _client(sim, transport)
    yield c
    c.close()


@pytest.fixture
def line(sim, transport):
    raw = (
        RawLine(tty=sim.endpoints["pty"]) if transport == "pty" else RawLine(tcp=sim.address("tcp"))
    )
    yield raw
    raw.close()


def regs(client, unit: int, fc: int, address: int, count: int) -> list[int]:
    read = client.read_input_registers if fc == 4 else client.read_holding_registers
    reply = read(address, count=count, device_id=unit)
    assert not reply.isError(), reply
    return list(reply.registers)


def test_every_point_of_every_model_is_plausible(client):
    codes = {1: 0x1001, 2: 0x2001, 3: 0x2002, 4: 0x3001, 5: 0x4001}
    for unit, code in codes.items():
        assert regs(client, unit, 3, 9000, 2) == [code, 0x0100]

    io, ior, v = regs(client, 1, 4, 0, 3)
    assert 0 <= ior / 10 < 10 and io >= ior and 195 < v / 10 < 206

    for unit, order in ((2, "ABCD"), (3, "CDAB")):
        r = regs(client, unit, 4, 0, 7)
        kw = join32(r[0], r[1], order, signed=True) / 100
        kwh = join32(r[2], r[3], order, signed=False) / 10
        v, a, pf = r[4] / 10, r[5] / 100, s16(r[6]) / 1000
        assert 20 < kw < 100, (unit, kw)  # Monday afternoon, 80 kW peak
        assert 10_000 <= kwh < 60_000
        assert 195 < v < 206 and 0.8 < pf <= 1
        assert a == pytest.approx(kw * 1000 / (3**0.5 * v * pf), rel=0.02)
        # each point read on its own agrees with the block read (same instant at --speed 60
        # only for the slow-moving voltage)
        assert abs(regs(client, unit, 4, 4, 1)[0] - r[4]) < 30

    t, rh = regs(client, 4, 4, 0, 2)
    assert -5 < s16(t) / 10 < 40 and 5 <= rh / 10 <= 99

    contacts = client.read_discrete_inputs(0, count=8, device_id=5)
    assert not contacts.isError()
    states = [int(b) for b in contacts.bits[:8]]
    assert states[2] == 1 and states[5] == 0 and states[7] == 0  # lights on, no trips
    single = client.read_discrete_inputs(2, count=1, device_id=5)
    assert int(single.bits[0]) == 1


def test_values_move_with_simulated_time(client, control):
    control.ok(cmd="clock", speed=0)
    before = regs(client, 2, 4, 0, 4)
    control.ok(cmd="clock", advance=3600)
    after = regs(client, 2, 4, 0, 4)
    gained = (
        join32(after[2], after[3], "ABCD", False) - join32(before[2], before[3], "ABCD", False)
    ) / 10
    assert 20 < gained < 100  # kWh in one afternoon hour of an 80 kW building


def test_absent_unit_gets_no_answer(client):
    with pytest.raises(ModbusIOException):
        client.read_input_registers(0, count=1, device_id=9)


def test_no_reply_times_out_then_recovers(client, control):
    control.ok(cmd="inject", unit=1, fault="no_reply")
    with pytest.raises(ModbusIOException):
        client.read_input_registers(0, count=3, device_id=1)
    assert regs(client, 2, 3, 9000, 1) == [0x2001]  # the rest of the bus still answers
    control.ok(cmd="clear", unit=1, fault="no_reply")
    assert len(regs(client, 1, 4, 0, 3)) == 3


def test_unplug_and_plug_back(client, control):
    control.ok(cmd="unplug", unit=4)
    with pytest.raises(ModbusIOException):
        client.read_holding_registers(9000, count=1, device_id=4)
    control.ok(cmd="plug", unit=4)
    assert regs(client, 4, 3, 9000, 1) == [0x3001]


def test_slow_reply(line, control):
    control.ok(cmd="inject", unit=4, fault="slow", delay_ms=600)
    began = time.monotonic()
    assert line.exchange(read_request(4, 3, 9000, 1), timeout=0.2) == b""  # too slow for 200 ms
    late = line.collect(timeout=3)  # ... but it does come
    assert time.monotonic() - began >= 0.6
    assert crc_ok(late) and parse_reply(late)[2] == b"\x30\x01"


def test_bad_crc(line, control):
    control.ok(cmd="inject", unit=2, fault="crc")
    frame = line.exchange(read_request(2, 3, 9000, 2))
    assert len(frame) == 9 and frame[:3] == bytes([2, 3, 4])
    assert not crc_ok(frame)


def test_wrong_unit_id(line, control):
    control.ok(cmd="inject", unit=3, fault="wrong_unit", as_unit=7)
    frame = line.exchange(read_request(3, 3, 9000, 1))
    assert crc_ok(frame) and frame[0] == 7 and words(frame[3:-2]) == [0x2002]


@pytest.mark.parametrize("code", [2, 4])
def test_exception_response(client, control, code):
    control.ok(cmd="inject", unit=1, fault="exception", code=code)
    reply = client.read_input_registers(0, count=3, device_id=1)
    assert reply.isError() and reply.exception_code == code


def test_stuck_value(client, control):
    control.ok(cmd="clock", speed=0)
    control.ok(cmd="inject", unit=2, fault="stuck")
    first = regs(client, 2, 4, 0, 7)
    control.ok(cmd="clock", advance=2 * 3600)
    assert regs(client, 2, 4, 0, 7) == first
    control.ok(cmd="clear", unit=2, fault="stuck")
    assert regs(client, 2, 4, 0, 7) != first


def test_spike(client, control):
    control.ok(cmd="clock", speed=0)
    normal = regs(client, 4, 4, 1, 1)[0]
    control.ok(cmd="inject", unit=4, fault="spikes", rate=1.0, factor=10.0, points=["rh"])
    assert regs(client, 4, 4, 1, 1)[0] == pytest.approx(10 * normal, abs=10)


def test_set_point_override(client, control):
    reply = control.ok(cmd="set", unit=1, point="ior", value=35.0)
    assert reply["device"]["values"]["ior"] == 35.0
    io, ior, _ = regs(client, 1, 4, 0, 3)
    assert ior == 350 and io >= 350


def test_control_rejects_bad_requests(control, sim):
    assert control(cmd="inject", unit=1, fault="gremlins")["ok"] is False
    assert control(cmd="set", unit=99, point="ior", value=1)["ok"] is False
    # not JSON: an error reply, and the channel keeps working
    control.file.write(b"{not json\n")
    control.file.flush()
    assert b'"ok": false' in control.file.readline()
    assert control(cmd="ping") == {"ok": True}


def _short_sim(*extra: str) -> SimProcess:
    return SimProcess("--tcp", "127.0.0.1:0", "--device", "thermo:1", *extra)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on_signal_and_releases_its_pty(sig):
    with SimProcess("--pty", "--device", "thermo:1", "--device", "di:2") as proc:
        path = proc.endpoints["pty"]
        client = ModbusSerialClient(
            path, framer=FramerType.RTU, baudrate=9600, timeout=1, retries=0
        )
        assert client.connect()
        assert regs(client, 1, 3, 9000, 1) == [0x3001]
        client.close()
        assert proc.stop(sig) == 0
        assert "stopped" in proc.stdout_tail
        assert "Traceback" not in proc.stderr, proc.stderr
        poll(lambda: not os.path.exists(path), 5, f"{path} to disappear")


def test_serves_an_existing_serial_port():
    # The test owns a pty pair, like a USB RS-485 adapter: the simulator opens
    # the tty side with pyserial (--port), the test plays the master on the other.
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        with SimProcess(
            "--port", path, "--baudrate", "19200", "--device", "meter-cdab:3:baud=19200"
        ) as proc:
            assert proc.endpoints["port"] == path
            line = RawLine(fd=master)
            frame = line.exchange(read_request(3, 3, 9000, 2))
            unit, fc, data = parse_reply(frame)
            assert (unit, fc, words(data)) == (3, 3, [0x2002, 0x0100])
            assert line.exchange(read_request(4, 3, 9000, 2), timeout=0.3) == b""
            line.close()
            assert proc.stop() == 0 and "Traceback" not in proc.stderr
    finally:
        os.close(master)
        os.close(slave)


def test_shutdown_command_and_tcp_connections_are_dropped():
    with _short_sim("--control", "127.0.0.1:0") as proc:
        client = _client(proc, "tcp")
        assert regs(client, 1, 3, 9000, 1) == [0x3001]
        ctl = Control(proc.address("control"))
        assert ctl(cmd="shutdown") == {"ok": True}
        assert proc.proc.wait(timeout=10) == 0
        _, err = proc.proc.communicate(timeout=5)
        assert "Traceback" not in err, err
        ctl.close()
        with pytest.raises(ConnectionException, match="closed"):  # the server dropped it
            client.read_holding_registers(9000, count=1, device_id=1)
        client.close()


def test_startup_error_exits_2_with_a_message():
    proc = _short_sim("--device", "thermo:1")  # unit 1 twice
    with pytest.raises(AssertionError, match="exited before ready"), proc:
        pass
    assert proc.proc.returncode == 2
    assert proc.stderr.strip() == "firmware_sim: error: unit id 1 is already used on this bus"
