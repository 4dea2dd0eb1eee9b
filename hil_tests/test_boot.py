"""Boot: birth, channels registered with units, periodic data stored with the served values."""

from __future__ import annotations

import itertools
import math
import time

from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import DATA_S, addresses, commission, wait_boot, wait_sample

UNITS = {  # channel -> (unit, kind) as docs/sensors.md defines them
    "leak1.io": ("mA", "leak"),
    "leak1.ior": ("mA", "leak"),
    "leak1.v": ("V", "voltage"),
    "pm1.kw": ("kW", "power"),
    "pm1.kwh": ("kWh", "energy"),
    "pm1.v": ("V", "voltage"),
    "pm1.a": ("A", "current"),
    "pm1.pf": ("", "pf"),
    "th1.t": ("degC", "temperature"),
    "th1.rh": ("%RH", "humidity"),
    **{f"di.di{i}": ("", "contact") for i in range(1, 9)},
}


def test_boot_birth_channels_and_periodic_data(cloud: Cloud, dut: VirtualDut) -> None:
    started = time.time()
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "ops")])
    terminal = cloud.terminal(dut.tid)
    assert terminal.last_boot == 1
    assert terminal.firmware_version
    assert str(terminal.connectivity) == "online"
    assert cloud.channels(dut.tid) == UNITS

    # periodic: at least 5 one-second samples of every channel, values as served
    served = dut.bus.served()
    poll(
        lambda: all(len(cloud.samples(dut.tid, ch, start=int(started))) >= 5 for ch in UNITS),
        DATA_S,
        lambda: f"5 samples of every channel:\n{dut.log()[-2000:]}",
    )
    for channel, expected in served.items():
        points = cloud.samples(dut.tid, channel, start=int(started))
        for p in points:
            assert math.isclose(p.value, expected, abs_tol=1e-9), (channel, p, expected)
            assert not p.historical
            assert started - 5 <= p.ts <= time.time() + 5
        steps = {b.ts - a.ts for a, b in itertools.pairwise(points)}
        assert steps <= {1, 2}, (channel, steps)  # one-second sampling, nothing doubled
    assert not [m for m in cloud.deliveries(dut.tid)], "a healthy boot mails nobody"

    # a reboot counts the boot, keeps the channels, and the data carries on
    rebooted = int(time.time())
    dut.reboot()
    wait_boot(cloud, dut, 2)
    assert cloud.channels(dut.tid) == UNITS
    wait_sample(
        cloud,
        dut,
        "leak1.ior",
        lambda p: p.value == served["leak1.ior"],
        "data of boot 2",
        after=rebooted,
    )
