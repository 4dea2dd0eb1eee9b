"""A threshold changed in the cloud: applied and acknowledged; an invalid one rejected."""

from __future__ import annotations

from cloud.models import ConfigStatus, Terminal
from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import ALARM_S, BOOT_S, CONFIG, CONTACT_RULE, LEAK_RULE, addresses, commission


def acked(cloud: Cloud, tid: str) -> Terminal | None:
    t = cloud.terminal(tid)
    return t if t.config_status != ConfigStatus.PENDING else None


def test_threshold_change_applied_and_invalid_one_rejected(cloud: Cloud, dut: VirtualDut) -> None:
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "ops")])
    dut.force("leak1.ior", 12.0)  # below the commissioned 20 mA warning level

    lower = {**CONFIG, "thresholds": [{**LEAK_RULE, "warn": 10, "alarm": 15}, CONTACT_RULE]}
    cloud.push_config(dut.tid, 2, lower)
    t = poll(lambda: acked(cloud, dut.tid), BOOT_S, "the ack of config v2")
    assert (t.config_status, t.config_version, t.config_reason) == (ConfigStatus.APPLIED, 2, None)
    # applied, not just acknowledged: 12 mA is now above the new warning level
    alarm = poll(
        lambda: cloud.alarm(dut.tid, "leak", "leak1.ior"),
        ALARM_S,
        lambda: f"a warning at the new level:\n{dut.log()[-2000:]}",
    )
    assert (str(alarm.severity), alarm.threshold) == ("warning", 10.0)

    bad = {**CONFIG, "thresholds": [{**LEAK_RULE, "channel": "leak9.ior"}]}
    cloud.push_config(dut.tid, 3, bad)
    t = poll(lambda: acked(cloud, dut.tid), BOOT_S, "the ack of config v3")
    assert t.config_status == ConfigStatus.REJECTED
    assert t.config_reason == "thresholds[0].channel: no such channel in the wiring"
    assert t.config_version == 2  # the one in force stays
    # and the terminal still works to v2: an alarm above 15 mA
    dut.force("leak1.ior", 16.0)
    poll(
        lambda: cloud.state(dut.tid, "leak", "leak1.ior")[0] == "alarm",
        ALARM_S,
        "escalation under config v2",
    )
