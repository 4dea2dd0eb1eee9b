"""The Modbus master and built-in profiles against the simulated sensors (firmware_sim).

firmware_sim serves docs/sensors.md with pymodbus; edge/ reads it with its
own codec and profiles. Two independent sides of the same contract:

- in process: the simulator's bus is the FakeLink's slave (virtual time);
- over a real pty: ``python -m firmware_sim serve --pty`` in a child process,
  the master on pyserial through a small Link adapter, faults switched on and
  off through the simulator's control channel.
"""

from __future__ import annotations

import time

import pytest
import serial

from edge.bus import UNREACHABLE, Bus, Device, Poller
from edge.fakelink import FakeLink
from edge.link import Link
from edge.profiles import profile_table
from firmware_sim import Bus as SimBus
from firmware_sim import SimClock
from tests.support.sim import Control, SimProcess, poll

KINDS = (
    ("insulation", 1, "IM-100"),
    ("meter", 2, "PM-300"),
    ("meter-cdab", 3, "PM-310"),
    ("thermo", 4, "TH-10"),
    ("di", 5, "DI-8"),
)
DEVICES = [{"name": kind, "unit": unit, "model": model} for kind, unit, model in KINDS]


def points(dev: Device) -> list[dict]:
    """The profile points of ``dev`` (a Poller keeps the read plan, not the profile)."""
    assert dev.model is not None
    return profile_table(None, [dev.model])[dev.model]["points"]


def engineering(poller: Poller) -> dict[int, dict[str, float | None]]:
    """Each device's values in engineering units (raw * 10**exp), by unit id."""
    out = {}
    for dev in poller.devices:
        vals: dict[str, float | None] = {}
        for point, raw in zip(points(dev), dev.values, strict=True):
            if raw is UNREACHABLE:
                vals[point["name"]] = None
            else:
                exp = point["exp"]
                vals[point["name"]] = round(raw * 10**exp, -exp) if exp < 0 else raw
        out[dev.unit] = vals
    return out


def served(status: list[dict]) -> dict[int, dict[str, float | None]]:
    return {d["unit"]: {k: float(v) for k, v in d["values"].items()} for d in status}


def test_every_profile_reads_what_the_simulator_serves():
    sim = SimBus(SimClock(start=1_780_000_000, speed=0), seed=7)
    for kind, unit, _ in KINDS:
        sim.add(kind, unit)
    # Values that exercise signs and both word orders.
    sim.set_value(1, "ior", 35.0)
    sim.set_value(2, "kw", -123.45)
    sim.set_value(3, "kw", -123.45)
    sim.set_value(2, "pf", -0.875)
    sim.set_value(4, "t", -10.5)
    link = FakeLink(sim.respond)
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms)
    poller = Poller(bus, DEVICES)
    poller.poll()
    assert bus.requests == 5 and bus.replies == 5
    got = engineering(poller)
    assert got == served(sim.status())
    assert got[1]["ior"] == 35.0
    assert got[2]["kw"] == got[3]["kw"] == -123.45
    assert min(got[2]["kwh"] or 0, got[3]["kwh"] or 0) > 6553.5  # needs both words
    assert got[2]["pf"] == -0.875
    assert got[4]["t"] == -10.5
    # The test devices' model code at holding register 9000 (docs/sensors.md).
    codes = {1: 0x1001, 2: 0x2001, 3: 0x2002, 4: 0x3001, 5: 0x4001}
    for unit, code in codes.items():
        assert bus.read(unit, 3, 9000, 1) == [code]


def test_the_documented_profiles_read_what_the_simulator_serves():
    """Each documented profile polled by the terminal's code from its simulated device."""
    real = ("SDM120", "SDM630", "KM-N1", "XY-MD02", "WS-IO8")
    sim = SimBus(SimClock(start=1_780_000_000, speed=0), seed=7)
    devices = []
    for unit, model in enumerate(real, 1):
        sim.add(model, unit, baud=9600)
        devices.append({"name": model, "unit": unit, "model": model})
    sim.set_value(2, "kw", -12.5)  # exported power: a negative float
    link = FakeLink(sim.respond)
    bus = Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms)
    poller = Poller(bus, devices)
    poller.poll()
    assert bus.replies == bus.requests and bus.exceptions == 0
    served = {d["unit"]: d["values"] for d in sim.status()}
    for dev in poller.devices:
        for point, raw in zip(points(dev), dev.values, strict=True):
            if "scale" in point or point["type"] == "f32":
                value = raw
            else:
                value = raw * 10.0 ** point["exp"]
            expected = served[dev.unit][point["name"]]
            assert value == pytest.approx(expected, rel=1e-6, abs=1e-6), (dev.name, point)
    values = dict(
        zip(
            [p["name"] for p in points(poller.devices[1])],
            poller.devices[1].values,
            strict=True,
        )
    )
    assert values["kw"] == pytest.approx(-12.5) and 180 < values["v1"] < 230


class SerialLink(Link):
    """The Link contract on pyserial (what the host HAL will do, minimally)."""

    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 9600, timeout=0)

    def write(self, buf) -> None:
        self.ser.write(bytes(buf))
        self.ser.flush()

    def read(self, n: int, timeout_ms: int) -> bytes:
        self.ser.timeout = max(timeout_ms, 0) / 1000
        return self.ser.read(n)

    def flush_input(self) -> None:
        self.ser.reset_input_buffer()

    def close(self) -> None:
        self.ser.close()


def ms() -> int:
    return time.monotonic_ns() // 1_000_000


@pytest.fixture
def pty_sim():
    args = ["--pty", "--control", "127.0.0.1:0", "--speed", "0", "--seed", "3"]
    for kind, unit, _ in KINDS:
        args += ["--device", f"{kind}:{unit}"]
    with SimProcess(*args) as proc:
        control = Control(proc.address("control"))
        link = SerialLink(proc.endpoints["pty"])
        try:
            yield link, control
        finally:
            link.close()
            control.close()
            assert proc.stop() == 0


def test_poller_over_a_real_pty_with_faults(pty_sim):
    link, control = pty_sim
    bus = Bus(link, ms, sleep_ms=lambda n: time.sleep(n / 1000), timeout_ms=150, retries=1)
    poller = Poller(bus, DEVICES, down_after=2, backoff_ms=400, backoff_max_ms=800)

    results = poller.poll()
    assert all(v is not UNREACHABLE for values in results for v in values), results
    assert engineering(poller) == served(control.ok(cmd="status")["devices"])
    assert poller.counters()["timeouts"] == 0

    # A corrupted reply is retried; a persistent one makes the points unreachable.
    control.ok(cmd="inject", unit=1, fault="crc")
    poller.poll()
    assert poller.devices[0].values == [UNREACHABLE] * 3
    assert bus.crc_errors == 2 and bus.retries == 1
    control.ok(cmd="clear", unit=1)

    # Another unit's id in the reply is discarded, never taken for ours.
    control.ok(cmd="inject", unit=4, fault="wrong_unit", as_unit=9)
    poller.poll()
    assert poller.devices[3].values == [UNREACHABLE] * 2
    assert bus.frame_errors == 2 and bus.discarded > 0
    control.ok(cmd="clear", unit=4)

    # A device leaves the bus: it is backed off, the others keep being read.
    control.ok(cmd="unplug", unit=5)
    for _ in range(2):
        poller.poll()
    di = poller.devices[4]
    assert not di.up
    t0 = ms()
    cycles = 0
    while ms() - t0 < 1500:
        start = ms()
        results = poller.poll()
        cycles += 1
        assert all(v is not UNREACHABLE for values in results[:4] for v in values)
        # A cycle without the dead device is quick; a probe costs one timeout.
        assert ms() - start < 400
        time.sleep(0.02)
    assert di.skipped >= cycles - 4, (di.skipped, cycles)

    # Back on the bus: read again within one backoff period.
    control.ok(cmd="plug", unit=5)
    poll(lambda: poller.poll() and di.up, timeout=5, what="DI-8 recovered")
    assert all(v is not UNREACHABLE for v in di.values)
    assert poller.counters()["recoveries"] == 1
