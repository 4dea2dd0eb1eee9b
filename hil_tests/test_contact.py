"""Contact input change: an equipment-status alarm reaches its own targets only."""

from __future__ import annotations

from hil_tests.cloud import Cloud, poll
from hil_tests.dut import VirtualDut
from hil_tests.steps import ALARM_S, MAIL_S, addresses, commission, wait_sample
from tests.support.smtp import SmtpSink


def test_breaker_trip_contact_mails_contact_target_not_leak_target(
    cloud: Cloud, dut: VirtualDut, smtp: SmtpSink
) -> None:
    contact_mail, leak_mail = addresses(dut.tid, "facility", "insulation")
    commission(cloud, dut, targets=[(contact_mail, "contact"), (leak_mail, "leak")])
    wait_sample(cloud, dut, "di.di6", lambda p: p.value == 0, "breaker contact open")

    dut.force("di.di6", 1)  # breaker trip: rule "alarm when 1"
    alarm = poll(
        lambda: cloud.alarm(dut.tid, "contact", "di.di6"),
        ALARM_S,
        lambda: f"contact alarm:\n{dut.log()[-2000:]}",
    )
    assert (str(alarm.severity), str(alarm.state)) == ("alarm", "raised")
    wait_sample(cloud, dut, "di.di6", lambda p: p.value == 1, "breaker contact closed")
    poll(lambda: any(contact_mail in m.rcpt_tos for m in smtp.messages), MAIL_S, "the contact mail")

    dut.release("di.di6")
    poll(
        lambda: cloud.state(dut.tid, "contact", "di.di6")[1] == "cleared",
        ALARM_S,
        "contact recovery",
    )
    poll(
        lambda: [m.status for m in cloud.deliveries(dut.tid)] == ["sent", "sent"],
        MAIL_S,
        "raised and cleared mails sent",
    )
    ledger = cloud.deliveries(dut.tid)
    assert [(m.recipient, m.event, m.cond) for m in ledger] == [
        (contact_mail, "raised", "contact"),
        (contact_mail, "cleared", "contact"),
    ]
    assert [str(m["X-Mimamori-Event"]) for m in smtp.messages if contact_mail in m.rcpt_tos] == [
        "raised",
        "cleared",
    ]
    assert not [m for m in smtp.messages if leak_mail in m.rcpt_tos]
