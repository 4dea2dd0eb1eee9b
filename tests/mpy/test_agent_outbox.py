"""Agent store-and-forward and session: offline queueing, order, drops, reboots, backoff.

Runs under CPython (pytest) and real MicroPython (tests/mpy/test_agent_fakes.py).
"""

from test_agent_fakes import START_UNIX, Rebooted, Rig, seqs

from edge.agent import Agent
from edge.session import Session


def test_offline_frames_pile_up_then_go_out_in_order_with_original_times():
    rig = Rig("offline", cloud={"version": 1, "upload": 0, "heartbeat": 60})
    rig.broker.reachable = False
    agent = rig.boot()
    rig.run(125)
    assert rig.broker.published == []
    assert agent.outbox.depth == 1 + 13 + 2  # birth, a sample every 10 s, 2 heartbeats
    attempts = rig.broker.attempts
    assert 4 <= attempts <= 10  # backoff: 1, 2, 4, 8, 16, 32, 64 s with jitter, not a storm
    rig.broker.reachable = True
    waited = 0
    while rig.broker.sessions == 0:  # the backoff has grown past a minute by now
        rig.run(5)
        waited += 5
        assert waited <= 300, "no reconnect within the 5-minute backoff cap"
    rig.run(5)
    assert rig.broker.sessions == 1
    got = rig.broker.frames()
    assert got[0]["type"] == "birth"  # the connect's birth before anything else
    queued = got[1:]
    assert queued[0]["type"] == "birth" and queued[0]["seq"] == 0
    assert seqs(queued) == sorted(seqs(queued))  # the queue keeps its order
    assert len(set(seqs(got))) == len(got)  # nothing twice
    data = [f for f in queued if f["type"] == "data"]
    times = [frames_time(d) for d in data]
    assert times[:13] == [START_UNIX + 10 * k for k in range(13)]  # when sampled, not sent
    assert agent.outbox.depth == 0
    # every seq is accounted for: received, or the death of the one connect
    death_seq = got[0]["seq"] - 1
    assert sorted(seqs(got) + [death_seq]) == list(range(max(seqs(got)) + 1))


def frames_time(d):
    return d["ts"] + d["samples"][0]["dt"]


def test_frame_removed_only_after_puback_and_resent_after_reconnect():
    rig = Rig("puback", cloud={"version": 1, "upload": 0})
    agent = rig.boot()
    rig.run(5)
    before = agent.outbox.depth
    assert before == 0
    rig.broker.withhold_puback = True
    rig.run(10)  # one sample; its publish gets no PUBACK, the session drops
    assert agent.outbox.depth >= 1
    assert rig.broker.client is None and rig.broker.deaths  # will fired: link lost
    rig.broker.withhold_puback = False
    rig.run(30)
    assert agent.outbox.depth == 0
    data = rig.broker.frames("data")
    keys = [(f["boot"], f["seq"]) for f in data]
    # at least once: the frame whose PUBACK never came was sent again...
    assert [k for k in keys if keys.count(k) > 1] == [keys[1], keys[1]]
    # ...and nothing is missing: one sample every 10 s
    times = sorted(set([frames_time(f) for f in data]))
    assert times == [START_UNIX + 10 * k for k in range(len(times))] and len(times) == 5


def test_budget_exceeded_drops_oldest_data_keeps_alarms_and_reports_count():
    cloud = {
        "version": 1,
        "upload": 0,
        "heartbeat": 3600,
        "thresholds": [{"channel": "leak1.ior", "cond": "hi", "alarm": 30}],
    }
    rig = Rig(
        "budget", site_over={"outbox": {"budget": 8192}, "sample": {"interval": 1}}, cloud=cloud
    )
    rig.broker.reachable = False
    agent = rig.boot()
    rig.slave1.tables[4][1] = 400  # an alarm early on, while offline
    rig.run(3)
    rig.slave1.tables[4][1] = 10
    rig.run(600)  # 600 one-sample frames of ~40 bytes: far beyond 8 KB
    assert agent.outbox.dropped > 0
    assert agent.outbox.used <= 8192
    rig.broker.reachable = True
    rig.agent.next_status = rig.agent.mono()  # ask for a heartbeat now
    rig.run(400)
    alarms = rig.broker.frames("alarm")
    assert [(a["state"], a["value"]) for a in alarms] == [("raised", 400), ("cleared", 10)]
    rig.agent.next_status = rig.agent.mono()  # the one above may predate its own drops
    rig.run(1)
    status = rig.broker.frames("status")[-1]
    assert status["dropped"] == agent.outbox.dropped > 0
    data = rig.broker.frames("data")
    assert seqs(data) == sorted(seqs(data))
    times = [frames_time(d) for d in data]
    assert times[0] > START_UNIX + 300  # the oldest samples were dropped...
    assert times == list(range(times[0], times[0] + len(times)))  # ...and only those


def test_reboot_mid_outbox_loses_nothing_and_counts_boot():
    rig = Rig("reboot", cloud={"version": 1, "upload": 0})
    rig.broker.reachable = False
    first = rig.boot()
    rig.run(45)
    queued = first.outbox.depth
    assert queued >= 5
    first.shutdown()
    second = Agent(rig.hal, rig.dir, log=rig.log.append)  # power cycle: same flash
    rig.agent = second
    assert second.boot == first.boot + 1
    assert second.outbox.depth == queued + 1  # plus the new boot's birth
    rig.broker.reachable = True
    rig.run(120)
    got = rig.broker.frames()
    boot1 = [f for f in got if f["boot"] == 1]
    boot2 = [f for f in got if f["boot"] == 2]
    assert len(boot1) == queued and seqs(boot1) == list(range(queued))
    assert boot1[0]["type"] == "birth"
    queued2 = boot2[1:]  # after the connect's birth: boot 2's queue, its birth first
    assert queued2[0]["type"] == "birth" and queued2[0]["seq"] == 0
    # the old boot's frames went before the new boot's queued ones
    first_new = got.index(queued2[0])
    assert all(got.index(f) < first_new for f in boot1)


def test_reboot_command_answers_then_resets_and_next_boot_counts_up():
    rig = Rig("rebootcmd", cloud={"version": 1, "upload": 600})
    rig.boot()
    rig.run(25)
    rig.cmd(7, "reboot")
    try:
        rig.run(30)
        raise AssertionError("the agent did not reset")
    except Rebooted:
        pass
    res = rig.broker.frames("cmdres")
    assert [(r["id"], r["ok"]) for r in res] == [(7, True)]
    data = rig.broker.frames("data")
    assert data and len(data[-1]["samples"]) == 3  # the open batch was sent, not lost
    assert rig.broker.deaths  # no DISCONNECT: the cloud learns of the reset at once
    again = rig.boot()
    assert again.boot == 2


def test_session_backoff_doubles_with_jitter_up_to_the_cap():
    now = [0]

    def ticks():
        return now[0]

    def diff(a, b):
        return a - b

    seeds = [1]

    def rand(n):
        seeds[0] = (seeds[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return seeds[0] % n

    def factory(keepalive):
        raise OSError(113)  # EHOSTUNREACH

    s = Session(factory, "T1", ticks, diff, rand, backoff_min_ms=1000, backoff_max_ms=300000)
    delays = []
    for _ in range(14):
        assert s.wait_ms() == 0
        assert s.connect(b"d", b"b") == 0  # FAILED: nothing armed at the broker
        delays.append(s.wait_ms())
        now[0] += s.wait_ms()
    for k in range(14):
        base = min(1000 << k, 300000)
        assert base // 2 <= delays[k] <= base, (k, delays[k])
    assert max(delays) <= 300000 and delays[-1] >= 150000
    assert s.connect_errors == 14
