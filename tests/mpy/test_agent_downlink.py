"""Agent downlink: cloud config, commands, clock, and hostile input.

Runs under CPython (pytest) and real MicroPython (tests/mpy/test_agent_fakes.py).
"""

import json
import sys

from test_agent_fakes import START_UNIX, TID, Rig

from protocol import frames, topics

THRESHOLD = {"channel": "leak1.ior", "cond": "hi", "alarm": 30}


def stored_cloud(rig):
    with open(rig.dir + "/cloud.json") as f:
        return json.loads(f.read())


def test_config_applied_persisted_and_acked_with_version():
    rig = Rig("config")
    rig.boot()
    rig.run(2)
    rig.config(7, upload=0, heartbeat=60, thresholds=[THRESHOLD], sampling={"leak1.io": 5})
    rig.run(1)
    acks = rig.broker.frames("cfgack")
    assert [(a["version"], a["ok"], a["reason"]) for a in acks] == [(7, True, "applied")]
    assert stored_cloud(rig)["version"] == 7
    assert stored_cloud(rig)["thresholds"][0]["alarm"] == 30
    rig.run(12)
    data = rig.broker.frames("data")
    assert len(data) >= 2  # upload 0: every sample is its own frame now
    rig.slave1.tables[4][1] = 301  # 30.1 mA over the new 30 mA level
    rig.run(10)
    assert [(a["alias"], a["state"], a["threshold"]) for a in rig.broker.frames("alarm")] == [
        (1, "raised", 300)
    ]
    # the retained config comes again on every connect: acked, not re-applied
    rig.broker.cut()
    rig.run(5)
    acks = rig.broker.frames("cfgack")
    assert [(a["version"], a["ok"], a["reason"]) for a in acks][-1] == (7, True, "unchanged")
    # the next boot announces the version in force
    rig.agent.shutdown()
    rig.boot()
    rig.run(1)
    births = rig.broker.frames("birth")
    assert births[-1]["boot"] == 2 and births[-1]["cfg"] == 7


def test_configuration_code_is_loaded_only_while_it_runs_on_micropython():
    # edge.unload: on a board the set-up, command code, schema and config
    # store leave the heap after boot, after each config frame and after
    # each command; CPython keeps its modules.
    import edge

    board = sys.implementation.name == "micropython"
    names = ("edge.control", "edge.config", "protocol.config", "edge.profiles")
    rig = Rig("unload")
    rig.boot()
    rig.run(1)
    for name in names:
        assert (name in sys.modules) != board, name
    assert (getattr(edge, "control", None) is not None) != board
    rig.config(2, heartbeat=60)
    rig.config(3, upload="often")
    rig.run(1)
    acks = [(a["version"], a["ok"]) for a in rig.broker.frames("cfgack")]
    assert acks == [(2, True), (3, False)]
    assert rig.agent.heartbeat == 60 and rig.agent.config["cloud"]["version"] == 2
    for name in names:
        assert (name in sys.modules) != board, name
    rig.cmd(4, "rebirth")
    rig.cmd(5, "no_such_command")
    rig.run(1)
    assert [(r["id"], r["ok"]) for r in rig.broker.frames("cmdres")] == [(4, True), (5, False)]
    assert (getattr(edge, "control", None) is not None) != board
    for name in names:
        assert (name in sys.modules) != board, name


def test_invalid_config_rejected_with_reason_old_one_kept():
    rig = Rig("badconfig", cloud={"version": 3, "upload": 0, "thresholds": [THRESHOLD]})
    rig.boot()
    rig.run(2)
    rig.config(4, thresholds=[{"channel": "leak9.ior", "cond": "hi", "alarm": 30}])
    rig.config(5, upload="often")
    rig.config(2, upload=5)  # older than the one in force (a stale retained message)
    rig.run(1)
    acks = [(a["version"], a["ok"], a["reason"]) for a in rig.broker.frames("cfgack")]
    assert acks == [
        (4, False, "thresholds[0].channel: no such channel in the wiring"),
        (5, False, "upload: must be an integer 0..86400"),
        (2, False, "stale: version 2 is older than 3 in force"),
    ]
    assert stored_cloud(rig)["version"] == 3
    assert rig.agent.config["cloud"]["version"] == 3
    rig.slave1.tables[4][1] = 400
    rig.run(10)
    assert len(rig.broker.frames("alarm")) == 1  # the old thresholds still work
    rig.agent.next_status = rig.agent.mono()
    rig.run(1)
    assert rig.broker.frames("status")[-1]["errors"]["bad_config"] == 3


def test_sample_now_sends_data_at_once():
    rig = Rig("samplenow", cloud={"version": 1, "upload": 3600})
    rig.boot()
    rig.run(3)
    assert rig.broker.frames("data") == []
    rig.cmd(11, "sample_now")
    rig.run(1)
    res = rig.broker.frames("cmdres")
    assert [(r["id"], r["ok"], r["result"]) for r in res] == [(11, True, {"channels": 6})]
    data = rig.broker.frames("data")
    assert len(data) == 2  # the open batch (sample at 0), then the fresh sample
    assert data[-1]["samples"][0]["values"][1] == 12
    assert res[0]["seq"] > data[-1]["seq"]  # the result follows the data it announces


def test_unknown_command_answered_not_fatal():
    rig = Rig("unknown")
    rig.boot()
    rig.run(1)
    rig.cmd(12, "format_flash", {"really": True})
    rig.run(1)
    res = rig.broker.frames("cmdres")
    assert [(r["id"], r["ok"], r["result"]) for r in res] == [(12, False, "unknown command")]
    assert rig.agent.error_counts()["unknown_cmd"] == 1


def test_rebirth_answers_and_publishes_fresh_birth():
    rig = Rig("rebirth")
    rig.boot()
    rig.run(1)
    births = len(rig.broker.frames("birth"))
    rig.cmd(13, "rebirth")
    rig.run(1)
    got = rig.broker.frames()
    res = [f for f in got if f["type"] == "cmdres"]
    assert [(r["id"], r["ok"]) for r in res] == [(13, True)]
    new = rig.broker.frames("birth")[births:]
    assert len(new) == 1 and new[0]["seq"] == res[0]["seq"] + 1
    assert len(new[0]["channels"]) == 6


def test_resync_clock_from_cloud_time_clears_unsynced_flag():
    rig = Rig("resync", cloud={"version": 1, "upload": 0}, rtc_start=None)
    rig.boot()
    rig.run(11)
    early = rig.broker.frames("data")
    assert all(d["unsynced"] for d in early)
    assert early[0]["ts"] < 946684800 + 100  # no RTC, no sync: 2000-01-01 plus uptime
    cloud_now = START_UNIX + 3600
    rig.cmd(14, "resync_clock", {"time": cloud_now})
    rig.run(10)
    res = rig.broker.frames("cmdres")[-1]
    assert res["ok"] is True and res["result"]["source"] == "cloud"
    late = rig.broker.frames("data")[-1]
    assert late["unsynced"] is False
    assert cloud_now <= frames.sample_times(late)[0] <= cloud_now + 12
    assert rig.hal.rtc_set  # the board's RTC is set for the next boot
    rig.cmd(15, "resync_clock", {"time": "noon"})
    rig.cmd(16, "resync_clock", {"time": 5})
    rig.cmd(17, "resync_clock")  # NTP is disabled in this site
    rig.run(1)
    res = [(r["id"], r["ok"], r["result"]) for r in rig.broker.frames("cmdres")[-3:]]
    assert res == [
        (15, False, "bad args: time must be Unix seconds"),
        (16, False, "time out of range"),
        (17, False, "no time given and NTP is disabled"),
    ]


def test_ntp_when_reachable_else_unsynced():
    rig = Rig(
        "ntp",
        site_over={"clock": {"ntp": "pool.ntp.org", "max_age": 3600}},
        cloud={"version": 1, "upload": 0},
    )
    rig.boot()
    rig.run(11)
    assert rig.hal.ntp_calls >= 1
    assert all(d["unsynced"] for d in rig.broker.frames("data"))
    rig.hal.ntp_unix = START_UNIX + 500
    rig.run(300)  # the retry interval
    d = rig.broker.frames("data")[-1]
    assert d["unsynced"] is False
    assert rig.agent.clock.source == "ntp"
    assert rig.agent.error_counts()["ntp"] >= 1


def test_malformed_downlink_is_counted_and_survived():
    rig = Rig("hostile", cloud={"version": 1, "upload": 0})
    rig.boot()
    rig.run(1)
    b = rig.broker
    cfg_topic = topics.downlink(TID, "config")
    cmd_topic = topics.downlink(TID, "cmd")
    b.deliver(cfg_topic, b"\xff\x00garbage")  # not CBOR
    b.deliver(cmd_topic, b"\x9f\x01\x02\xff")  # indefinite array
    b.deliver(cmd_topic, b"\x88" + b"\x01" * 300)  # trailing bytes
    other = frames.encode(
        {
            "type": "cmd",
            "tid": "T0002",
            "boot": 0,
            "seq": 1,
            "ts": 0,
            "unsynced": False,
            "id": 1,
            "name": "reboot",
            "args": {},
        }
    )
    b.deliver(cmd_topic, other)  # a frame for another terminal
    cfg = frames.encode(
        {
            "type": "config",
            "tid": TID,
            "boot": 0,
            "seq": 1,
            "ts": 0,
            "unsynced": False,
            "version": 9,
            "config": {},
        }
    )
    b.deliver(cmd_topic, cfg)  # a config on the command topic
    b.deliver("mm/v1/" + TID + "/down/\xff", cfg)  # a topic outside the scheme
    rig.run(2)
    rig.cmd(20, "sample_now")
    rig.run(1)
    assert rig.agent.error_counts()["bad_downlink"] == 6
    # the log says what was wrong (protocol.messages), and on a board the
    # message table has left the heap again (edge.unload)
    bad = [line for line in rig.log if line.startswith("bad downlink")]
    assert bad[1].endswith("unsupported_cbor: indefinite length at offset 0"), bad
    assert "tid_mismatch: frame from 'T0002' on topic of 'T0001'" in bad[3], bad
    assert ("protocol.messages" in sys.modules) != (sys.implementation.name == "micropython")
    assert [r["id"] for r in rig.broker.frames("cmdres")] == [20]
    assert rig.broker.frames("cfgack") == []
    assert rig.hal.resets == 0
    rig.agent.next_status = rig.agent.mono()
    rig.run(1)
    assert rig.broker.frames("status")[-1]["errors"]["bad_downlink"] == 6


def test_downlink_flood_is_bounded_per_step():
    rig = Rig("flood", cloud={"version": 1})
    rig.boot()
    rig.run(1)
    for i in range(40):
        rig.cmd(100 + i, "no_such_thing")
    rig.step()
    # one step reads what it can handle; the rest wait at the broker, none is lost
    assert len(rig.broker.pending) == 40 - 8
    rig.run(3)
    assert [r["id"] for r in rig.broker.frames("cmdres")] == list(range(100, 140))
    assert "downlink_overflow" not in rig.agent.error_counts()
