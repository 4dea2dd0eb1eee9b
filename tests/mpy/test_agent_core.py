"""Agent: boot, birth, sampling, data batches, local alarms, status.

Runs under CPython (pytest) and real MicroPython: a scripted broker and
FakeLink sensors on one virtual clock (tests/mpy/test_agent_fakes.py).
"""

from test_agent_fakes import IM100_A, IM100_B, PASSWORD, START_UNIX, TID, Rebooted, Rig, seqs

from edge import FIRMWARE_VERSION
from protocol import frames, topics

VALUES = [IM100_A[0], IM100_A[1], IM100_A[2], IM100_B[0], IM100_B[1], IM100_B[2]]


def test_boot_publishes_birth_first_with_will_and_channel_table():
    rig = Rig("birth")
    agent = rig.boot()
    assert agent.boot == 1
    rig.step()
    b = rig.broker
    assert b.sessions == 1
    # the death is the will, registered at connect with the seq just before the birth
    will_topic, will_payload, retain, qos = b.will
    death = frames.decode(will_payload)
    assert (will_topic, retain, qos) == (topics.uplink(TID, "death"), False, 1)
    topic, payload = b.published[0]
    birth = frames.decode(payload)
    assert topic == topics.uplink(TID, "birth")
    assert birth["type"] == "birth" and birth["boot"] == 1
    assert death["seq"] + 1 == birth["seq"]
    fw = birth["fw"].split()
    assert fw[0] == FIRMWARE_VERSION and fw[1] in ("micropython", "cpython") and birth["cfg"] == 0
    assert [(c["alias"], c["name"], c["unit"], c["kind"], c["exp"]) for c in birth["channels"]] == [
        (0, "leak1.io", "mA", "leak", -1),
        (1, "leak1.ior", "mA", "leak", -1),
        (2, "leak1.v", "V", "voltage", -1),
        (3, "leak2.io", "mA", "leak", -1),
        (4, "leak2.ior", "mA", "leak", -1),
        (5, "leak2.v", "V", "voltage", -1),
    ]
    # the boot's own birth, queued first, follows (seq 0)
    queued = frames.decode(b.published[1][1])
    assert (queued["type"], queued["seq"]) == ("birth", 0)
    assert b.client.user == TID and b.client.password == PASSWORD
    assert b.subscriptions == [topics.downlink_filter(TID)]


def test_data_batch_has_deltas_raw_values_and_original_times():
    rig = Rig("batch")
    rig.boot()
    rig.run(65)
    data = rig.broker.frames("data")
    assert len(data) == 1
    d = data[0]
    # 60 s upload window at 10 s sampling: 6 samples, ts + dt0 + dt1 + ...
    assert [s["dt"] for s in d["samples"]] == [0, 10, 10, 10, 10, 10]
    assert all(s["values"] == VALUES for s in d["samples"])
    assert "quality" not in d["samples"][0]
    assert d["ts"] == START_UNIX  # the RTC, not yet synchronised...
    assert d["unsynced"] is True  # ...so flagged
    assert frames.sample_times(d) == [START_UNIX + 10 * k for k in range(6)]
    rig.run(60)
    data = rig.broker.frames("data")
    assert len(data) == 2
    assert frames.sample_times(data[1])[0] == START_UNIX + 60
    assert seqs(data) == sorted(seqs(data))


def test_upload_zero_sends_every_sample_and_batch_matches_reference_encoder():
    rig = Rig("upload0", cloud={"version": 1, "upload": 0})
    rig.boot()
    rig.run(25)
    data = rig.broker.frames("data")
    assert [len(d["samples"]) for d in data] == [1, 1, 1]
    # the agent writes data frames itself; they are the bytes frames.encode makes
    for _topic, payload in rig.broker.published:
        assert frames.encode(frames.decode(payload)) == payload


def test_ior_excursion_sends_alarm_at_once_not_at_next_upload():
    cloud = {
        "version": 3,
        "upload": 600,
        "thresholds": [{"channel": "leak1.ior", "cond": "hi", "warn": 20, "alarm": 30, "hyst": 2}],
    }
    rig = Rig("alarm", cloud=cloud)
    rig.boot()
    rig.run(15)
    assert rig.broker.frames("alarm") == []
    assert rig.broker.frames("data") == []  # 10-minute batches: nothing yet
    rig.slave1.tables[4][1] = 312  # Ior 31.2 mA
    # step until the next sample is taken; the alarm must be out in that same step
    due = rig.agent.ch_next[1]
    while rig.agent.ch_next[1] == due:
        assert rig.broker.frames("alarm") == []
        rig.link.sleep_ms(100)
        rig.step()
    alarms = rig.broker.frames("alarm")
    assert [
        (a["alias"], a["cond"], a["level"], a["state"], a["value"], a["threshold"]) for a in alarms
    ] == [(1, "hi", 1, "raised", 312, 200), (1, "hi", 2, "raised", 312, 300)]
    # the batch holding the excursion went out just before the alarm
    data = rig.broker.frames("data")
    assert data and data[-1]["samples"][-1]["values"][1] == 312
    assert data[-1]["seq"] < alarms[0]["seq"]
    rig.slave1.tables[4][1] = 250  # inside the hysteresis band of the alarm level
    rig.run(10)
    assert len(rig.broker.frames("alarm")) == 2
    rig.slave1.tables[4][1] = 150
    rig.run(10)
    cleared = rig.broker.frames("alarm")[2:]
    assert [(a["level"], a["state"], a["value"]) for a in cleared] == [
        (2, "cleared", 150),
        (1, "cleared", 150),
    ]


def test_unreachable_sensor_flags_quality_and_raises_unreach_after_three_reads():
    rig = Rig("unreach", cloud={"version": 1, "upload": 0})
    rig.boot()
    rig.run(5)
    rig.slave2.dead = True
    rig.run(30)
    data = rig.broker.frames("data")
    last = data[-1]["samples"][-1]
    assert last["values"] == VALUES[:3]  # trailing nulls are not sent
    assert last["quality"] == [[3, 1], [4, 1], [5, 1]]  # unreachable
    raised = [(a["alias"], a["cond"], a["state"]) for a in rig.broker.frames("alarm")]
    assert raised == [(3, "unreach", "raised"), (4, "unreach", "raised"), (5, "unreach", "raised")]
    rig.slave2.dead = False
    rig.run(200)  # the poller backs off a dead device; it comes back on its own
    states = [(a["alias"], a["state"]) for a in rig.broker.frames("alarm")]
    assert states[3:] == [(3, "cleared"), (4, "cleared"), (5, "cleared")]
    assert rig.broker.frames("data")[-1]["samples"][-1]["values"] == VALUES
    assert rig.agent.error_counts()["modbus_timeout"] >= 3


def test_modbus_garbage_is_counted_never_fatal():
    rig = Rig("garbage", cloud={"version": 1, "upload": 0})
    rig.boot()
    rig.run(5)
    n = [0]

    def mangle(reply):
        n[0] += 1
        if n[0] % 2:
            return b"\x55\xaa" + reply[:-1] + bytes([reply[-1] ^ 0xFF])  # noise, bad CRC
        return [reply[:3], 400, reply[3:]]  # split past the deadline

    rig.link.set_manipulator(mangle)
    rig.run(60)
    rig.link.set_manipulator(None)
    rig.run(30)
    errors = rig.agent.error_counts()
    assert errors["crc"] > 0
    assert errors.get("modbus_frame", 0) + errors.get("modbus_timeout", 0) > 0
    assert "internal" not in errors
    assert rig.broker.frames("data")[-1]["samples"][-1]["values"] == VALUES


def test_status_heartbeat_reports_queue_errors_and_heap():
    rig = Rig("status", cloud={"version": 1, "heartbeat": 60, "upload": 0})
    rig.boot()
    rig.slave2.dead = True
    rig.run(125)
    status = rig.broker.frames("status")
    assert len(status) == 2
    s = status[-1]
    assert s["uptime"] >= 120 and s["heap"] == 48123 and s["rssi"] == -71
    assert s["queued"] >= 0 and s["dropped"] == 0
    assert s["errors"]["modbus_timeout"] >= 3
    assert rig.hal.wdt.feeds > 100  # the main loop feeds the watchdog every step


def test_a_terminal_with_nothing_wired_yet_boots_births_and_reports():
    rig = Rig("unwired", site_over={"wiring": []}, cloud={"version": 1, "heartbeat": 60})
    rig.boot()
    rig.run(61)
    rig.cmd(1, "sample_now")
    rig.run(1)
    b = rig.broker
    assert [c for f in b.frames("birth") for c in f["channels"]] == []
    assert b.frames("data") == [] and len(b.frames("status")) == 1
    assert [(r["ok"], r["result"]) for r in b.frames("cmdres")] == [(True, {"channels": 0})]
    assert rig.agent.errors == {}


def test_per_channel_sampling_intervals_from_cloud():
    cloud = {"version": 2, "upload": 0, "sampling": {"leak1.ior": 5, "leak2.v": 30}}
    rig = Rig("sampling", cloud=cloud)
    rig.boot()
    rig.run(31)
    data = rig.broker.frames("data")
    times = []
    per_alias = [0] * 6
    for d in data:
        t = frames.sample_times(d)[0]
        values = d["samples"][0]["values"]
        times.append(t - START_UNIX)
        for a in range(len(values)):
            if values[a] is not None:
                per_alias[a] += 1
    assert times == [0, 5, 10, 15, 20, 25, 30]
    assert per_alias == [4, 7, 4, 4, 4, 2]  # 10 s default, ior every 5 s, leak2.v every 30 s


def test_unexpected_fault_is_counted_and_a_stuck_one_reboots():
    rig = Rig("internal", cloud={"version": 1, "upload": 0})
    agent = rig.boot()
    rig.run(2)
    real = agent.evaluator.sample
    calls = [0]

    def flaky(alias, value, t):
        calls[0] += 1
        if calls[0] == 1:
            raise MemoryError("one-off")
        return real(alias, value, t)

    agent.evaluator.sample = flaky
    rig.run(12)  # one bad step, then business as usual
    assert agent.error_counts()["internal"] == 1
    assert rig.hal.resets == 0
    n = len(rig.broker.frames("data"))

    def broken(alias, value, t):
        raise ValueError("stuck")

    agent.evaluator.sample = broken
    try:
        rig.run(600)
        raise AssertionError("a fault in every step must end in a reboot")
    except Rebooted:
        pass
    # faults less than a minute apart count as one run: the one-off was its first
    assert agent.error_counts()["internal"] == 50
    assert len(rig.broker.frames("data")) >= n
