"""Mails name channels and contact states in the customer's words."""

from __future__ import annotations

from cloud.alarms import on_frame
from cloud.models import ChannelLabel, ChannelSpec, apply_birth
from cloud.notify.render import render
from tests.support.notify import (
    BOOT,
    CHANNELS,
    T0,
    alarm_frame,
    database,
    leak_rule,
    ledger,
    target,
    world,
)


def test_an_alarm_mail_names_the_channel_and_the_contacts_state(tmp_path):
    with database(f"sqlite:///{tmp_path / 'db.sqlite3'}") as (_engine, s):
        t = world(s)
        apply_birth(s, t.id, [*CHANNELS, ChannelSpec(6, "di3", "", "contact", 0)], BOOT, T0)
        leak_rule(s, t)
        target(s, t, "duty@example.com")
        s.add_all(
            [
                ChannelLabel(terminal_id=t.id, channel="ior", display_name="絶縁監視 Ior"),
                ChannelLabel(
                    terminal_id=t.id,
                    channel="di3",
                    display_name="受電遮断器",
                    state_off="切",
                    state_on="入",
                ),
            ]
        )
        s.commit()
        on_frame(s, t, alarm_frame(2, "raised", 312, 300), T0, False)
        on_frame(s, t, alarm_frame(2, "raised", 0, 1, alias=6, cond="contact"), T0, False)
        s.commit()
        leak, contact = ledger(s)
    subject, body = render(leak.payload, "ja")
    assert "絶縁監視 Ior (ior)" in subject and "31.2 mA" in subject
    assert "計測点    : 絶縁監視 Ior (ior)" in body
    subject, body = render(contact.payload, "en")
    assert "受電遮断器 (di3)" in subject
    assert "Value     : 切" in body and "Threshold : 入" in body
    # Mails queued before labels existed still render (no channel_label).
    old = {k: v for k, v in leak.payload.items() if k != "channel_label"}
    assert "Channel   : ior" in render(old, "en")[1]
