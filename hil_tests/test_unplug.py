"""A sensor unplugged: sensor-unreachable alarm for its channels only, the rest keeps flowing."""

from __future__ import annotations

import time

from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import ALARM_S, MAIL_S, addresses, commission, newest_ts, wait_sample

UNPLUGGED = ("th1.t", "th1.rh")


def test_unplugged_sensor_alarms_its_channels_only_and_recovers(
    cloud: Cloud, dut: VirtualDut
) -> None:
    (mail,) = addresses(dut.tid, "ops")
    commission(cloud, dut, targets=[(mail, None)])
    wait_sample(cloud, dut, "th1.t", lambda p: True, "temperature data")

    dut.unplug("th1")
    unplugged_at = int(time.time())
    poll(
        lambda: (
            {
                a.channel
                for a in cloud.alarms(dut.tid)
                if a.cond == "unreach" and str(a.state) == "raised"
            }
            == set(UNPLUGGED)
        ),
        ALARM_S,
        lambda: f"unreach alarms of {UNPLUGGED}:\n{dut.log()[-2000:]}",
    )
    # the other devices keep flowing while th1 is away
    for channel in ("leak1.ior", "pm1.kw", "di.di1"):
        wait_sample(
            cloud,
            dut,
            channel,
            lambda p: True,
            f"{channel} after the unplug",
            after=unplugged_at + 2,
        )
    last_t = newest_ts(cloud, dut.tid, "th1.t")
    assert last_t <= unplugged_at + 1, "a value was stored for an unplugged sensor"
    alarms = [a for a in cloud.alarms(dut.tid) if a.cond == "unreach"]
    assert len(alarms) == len(UNPLUGGED)  # one per channel, raised once

    dut.plug("th1")
    poll(
        lambda: all(
            str(a.state) == "cleared" for a in cloud.alarms(dut.tid) if a.cond == "unreach"
        ),
        ALARM_S,
        "unreach recovery",
    )
    wait_sample(cloud, dut, "th1.t", lambda p: True, "temperature after the plug", after=last_t)
    poll(
        lambda: (
            [m.status for m in cloud.deliveries(dut.tid, "unreach")]
            == ["sent"] * 2 * len(UNPLUGGED)
        ),
        MAIL_S,
        "unreach mails sent",
    )
    got = sorted((m.channel, m.event, m.status) for m in cloud.deliveries(dut.tid, "unreach"))
    assert got == sorted((ch, ev, "sent") for ch in UNPLUGGED for ev in ("raised", "cleared"))
    assert all(m.recipient == mail for m in cloud.deliveries(dut.tid))
    assert {a.cond for a in cloud.alarms(dut.tid)} == {"unreach"}
