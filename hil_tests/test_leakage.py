"""Leakage warning, then alarm, then recovery: the expected mails, to every address, once."""

from __future__ import annotations

from collections import Counter

from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import ALARM_S, MAIL_S, addresses, commission
from tests.support.smtp import SmtpSink

# What each recipient hears, in order: the warning, its escalation to an
# alarm, the alarm level ending (back to a warning) and the recovery.
EXPECTED = ["raised", "escalated", "deescalated", "cleared"]


def mails_to(smtp: SmtpSink, address: str) -> list[str]:
    return [str(m["X-Mimamori-Event"]) for m in smtp.messages if address in m.rcpt_tos]


def test_leak_warning_alarm_recovery_mails_each_address_once(
    cloud: Cloud, dut: VirtualDut, smtp: SmtpSink
) -> None:
    mail = addresses(dut.tid, "chief", "deputy")
    commission(cloud, dut, targets=[(a, None) for a in mail])

    def leak() -> tuple[str, str]:
        return cloud.state(dut.tid, "leak", "leak1.ior")

    def sent(n: int) -> bool:
        return all(len(mails_to(smtp, a)) >= n for a in mail)

    dut.force("leak1.ior", 25.0)  # warning level 20 mA
    poll(
        lambda: leak() == ("warning", "raised"),
        ALARM_S,
        lambda: f"leak warning:\n{dut.log()[-2000:]}",
    )
    alarm = cloud.alarm(dut.tid, "leak", "leak1.ior")
    assert alarm is not None and (alarm.value, alarm.threshold) == (25.0, 20.0)
    poll(lambda: sent(1), MAIL_S, "the warning mails")

    dut.force("leak1.ior", 35.0)  # alarm level 30 mA
    poll(lambda: leak() == ("alarm", "raised"), ALARM_S, "the leak alarm")
    poll(lambda: sent(2), MAIL_S, "the alarm mails")

    dut.force("leak1.ior", 1.0)  # below warning - hysteresis
    poll(lambda: leak()[1] == "cleared", ALARM_S, "the leak recovery")
    poll(lambda: sent(len(EXPECTED)), MAIL_S, "the recovery mails")

    # the SMTP server has the mails; the ledger says so once the worker recorded it
    ledger = poll(
        lambda: (
            (rows := cloud.deliveries(dut.tid, "leak"))
            and all(m.status == "sent" for m in rows)
            and rows
        ),
        MAIL_S,
        "the ledger to record the mails as sent",
    )
    for address in mail:
        assert [m.event for m in ledger if m.recipient == address] == EXPECTED
        assert mails_to(smtp, address) == EXPECTED
    # a sample or heartbeat more changes nothing: no mail twice, none extra
    seen = cloud.ingest_stats().get("stored_frames", 0)
    poll(lambda: cloud.ingest_stats().get("stored_frames", 0) >= seen + 3, 20, "three more frames")
    assert Counter(m.recipient for m in cloud.deliveries(dut.tid)) == dict.fromkeys(
        mail, len(EXPECTED)
    )
    assert [len(mails_to(smtp, a)) for a in mail] == [len(EXPECTED)] * 2
