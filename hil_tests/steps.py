"""Steps the scenarios share: commission a terminal, wait for the cloud to see it.

Every wait polls the cloud's database with a deadline (:func:`poll`).
"""

from __future__ import annotations

from typing import Any

from cloud.models import ConfigStatus
from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut

BOOT_S = 30.0  # power on -> birth stored
DATA_S = 20.0  # a sample taken -> stored
ALARM_S = 15.0  # a condition -> alarm row
MAIL_S = 30.0  # an alarm row -> mail at the SMTP server

LEAK_RULE = {"channel": "leak1.ior", "cond": "leak", "warn": 20, "alarm": 30, "hyst": 2}
CONTACT_RULE = {"channel": "di.di6", "cond": "contact", "alarm": 1}  # breaker trip contact
# The cloud part of the terminal's config as the settings page would push it:
# short upload and heartbeat so a scenario takes seconds, not minutes.
CONFIG: dict[str, Any] = {"upload": 2, "heartbeat": 10, "thresholds": [LEAK_RULE, CONTACT_RULE]}
# The same rules as the cloud keeps them (AlarmCondition rows).
CLOUD_RULES = [
    {"channel": "leak1.ior", "cond": "leak", "warn": 20.0, "alarm": 30.0, "hysteresis": 2.0},
    {"channel": "di.di6", "cond": "contact", "alarm": 1.0},
]


def addresses(tid: str, *names: str) -> list[str]:
    """Per-scenario mail addresses: no other scenario's mail can be counted."""
    return [f"{tid.lower()}-{n}@example.com" for n in names]


def commission(
    cloud: Cloud,
    dut: VirtualDut,
    *,
    targets: list[tuple[str, str | None]],
    config: dict[str, Any] | None = None,
    version: int = 1,
) -> None:
    """Register the terminal with its targets and rules, push config ``version``,
    power the DUT on and wait until the cloud has its birth and config ack."""
    cloud.register(dut.tid, targets=targets, rules=CLOUD_RULES)
    cloud.push_config(dut.tid, version, CONFIG if config is None else config)
    dut.boot()
    wait_boot(cloud, dut, 1)
    terminal = poll(
        lambda: (t := cloud.terminal(dut.tid)).config_status != ConfigStatus.PENDING and t,
        BOOT_S,
        lambda: f"config v{version} acked; log:\n{dut.log()}",
    )
    assert (terminal.config_status, terminal.config_version) == (ConfigStatus.APPLIED, version), (
        terminal.config_reason
    )


def wait_boot(cloud: Cloud, dut: VirtualDut, boot: int) -> None:
    poll(
        lambda: (cloud.terminal(dut.tid).last_boot or 0) >= boot,
        BOOT_S,
        lambda: f"birth of boot {boot} of {dut.tid}; terminal log:\n{dut.log()}",
    )


def newest_ts(cloud: Cloud, tid: str, channel: str) -> int:
    points = cloud.samples(tid, channel)
    return points[-1].ts if points else 0


def wait_sample(
    cloud: Cloud,
    dut: VirtualDut,
    channel: str,
    predicate: Any,
    what: str,
    *,
    after: int = 0,
    timeout: float = DATA_S,
) -> Any:
    """The first stored sample of ``channel`` newer than ``after`` matching ``predicate``."""

    def find() -> Any:
        for p in cloud.samples(dut.tid, channel, start=after + 1):
            if predicate(p):
                return p
        return None

    return poll(find, timeout, lambda: f"{what}; terminal log tail:\n{dut.log()[-2000:]}")
