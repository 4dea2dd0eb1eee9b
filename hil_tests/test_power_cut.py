"""Power cut in the middle of an outbox write: nothing that was queued is lost after reboot."""

from __future__ import annotations

import time

from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import BOOT_S, DATA_S, addresses, commission, wait_boot

CUT_AT = 6  # the 6th record appended in the boot is torn half-way


def test_power_cut_mid_outbox_write_loses_nothing_queued(cloud: Cloud, dut: VirtualDut) -> None:
    commission(cloud, dut, targets=[(a, None) for a in addresses(dut.tid, "ops")])
    # Boot 2 runs without its uplink, so everything it samples waits in the
    # outbox; the power fails while the 6th frame is being written.
    dut.set_uplink(False)
    dut.power_cut_during_outbox_write(CUT_AT)
    assert "power cut" in dut.log()
    assert cloud.terminal(dut.tid).last_boot == 1  # boot 2 never reached the cloud

    dut.set_uplink(True)
    power_back = int(time.time())
    dut.boot()  # power back: boot 3 repairs the torn tail and sends the backlog
    wait_boot(cloud, dut, 3)
    # Frames 0..4 of boot 2 (birth, data, ...) were durably queued; frame 5
    # never was (its write did not complete). All five arrive, once each.
    expected = [(2, seq) for seq in range(CUT_AT - 1)]
    poll(
        lambda: [r for r in cloud.receipts(dut.tid) if r[0] == 2] == expected,
        BOOT_S,
        lambda: (
            f"boot 2 frames {expected}, got "
            f"{[r for r in cloud.receipts(dut.tid) if r[0] == 2]}:\n{dut.log()[-3000:]}"
        ),
    )
    # its samples are in, kept at their own times and marked historical (they were late)
    late = [p for p in cloud.samples(dut.tid, "leak1.ior") if p.historical]
    assert late, "no sample of boot 2 stored"
    # the terminal counted no dropped frame: the torn record was an unfinished put
    dropped = poll(
        lambda: cloud.samples(dut.tid, "$dropped", start=power_back),
        DATA_S + 10,
        "a heartbeat of boot 3",
    )
    assert {p.value for p in dropped} == {0}
    assert cloud.ingest_stats().get("rejected_total", 0) == 0
