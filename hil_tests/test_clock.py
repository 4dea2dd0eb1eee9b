"""Terminal clock a day wrong: frames flagged unsynced, clock alarm, nothing overwritten."""

from __future__ import annotations

import time

from hil_tests.cloud import INGEST_PASSWORD, INGEST_USER, Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import ALARM_S, DATA_S, MAIL_S, addresses, commission, wait_boot
from protocol import topics
from tests.support.broker import MosquittoBroker
from tests.support.virtual_terminal import Uplink

DAY = 86400


def test_clock_a_day_ahead_flags_frames_raises_clock_alarm_overwrites_nothing(
    cloud: Cloud, dut: VirtualDut, broker: MosquittoBroker
) -> None:
    (mail,) = addresses(dut.tid, "ops")
    commission(cloud, dut, targets=[(mail, None)])
    poll(lambda: len(cloud.samples(dut.tid, "leak1.ior")) >= 3, DATA_S, "synced samples")
    before = {(p.ts, p.value) for p in cloud.samples(dut.tid, "leak1.ior")}
    assert all(ts <= time.time() + 2 for ts, _ in before)
    assert cloud.alarm(dut.tid, "clock") is None

    # a second cloud-side listener sees the frames as the broker carries them
    with broker.client("service", INGEST_USER, INGEST_PASSWORD) as sub:
        sub.connect_ok()
        sub.subscribe(topics.PREFIX + "/" + dut.tid + "/up/#")
        up = Uplink(sub)
        dut.force("leak1.ior", 5.0)  # tells the wrong-clock samples apart
        dut.set_clock_offset(DAY)
        wait_boot(cloud, dut, 2)
        data = up.wait_for(
            lambda f: f["type"] == "data" and f["boot"] == 2, DATA_S, "data of the wrong-clock boot"
        )
        assert data["unsynced"] is True
        assert abs(data["ts"] - (time.time() + DAY)) < 60  # the terminal's own idea of time
        assert all(f["unsynced"] for f in up.frames() if f["boot"] == 2)

    alarm = poll(
        lambda: cloud.alarm(dut.tid, "clock"), ALARM_S, lambda: f"clock alarm:\n{dut.log()[-2000:]}"
    )
    assert (str(alarm.severity), str(alarm.state)) == ("warning", "raised")
    assert abs(alarm.raised_at.timestamp() - time.time()) < 60  # the cloud's time, not the DUT's
    poll(
        lambda: (
            [(m.event, m.status) for m in cloud.deliveries(dut.tid, "clock")]
            == [("raised", "sent")]
        ),
        MAIL_S,
        "the clock alarm mail",
    )

    # the synced samples are untouched; the unsynced ones are stored beside them
    after = poll(
        lambda: (
            [p for p in cloud.samples(dut.tid, "leak1.ior") if p.ts > time.time() + DAY / 2] or None
        ),
        DATA_S,
        "samples from the wrong clock",
    )
    assert {p.value for p in after} == {5.0}
    still = {
        (p.ts, p.value)
        for p in cloud.samples(dut.tid, "leak1.ior")
        if p.ts <= time.time() + DAY / 2
    }
    assert before <= still
