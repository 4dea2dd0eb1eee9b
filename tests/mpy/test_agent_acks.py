"""Application acks: a queued frame leaves the outbox only when the cloud names it.

The scripted broker plays the ingest (an ``ack`` frame for what it
PUBACKed); ``broker.acks = False`` is an ingest that is down, or a broker
that acknowledged frames and then lost them. Runs under CPython (pytest)
and real MicroPython (tests/mpy/test_agent_fakes.py).
"""

from test_agent_fakes import Rig, seqs

from edge import control as agent_mod
from edge.agent import Agent
from protocol import topics


def queued(frames_):
    """Frames that went through the outbox (not the will, not a connect's birth)."""
    out = []
    for f in frames_:
        if f["type"] == "death" or (f["type"] == "birth" and f["seq"] > 0):
            continue
        out.append(f)
    return out


def counts(frames_):
    n = {}
    for f in frames_:
        key = (f["boot"], f["seq"])
        n[key] = n.get(key, 0) + 1
    return n


def test_frames_stay_queued_after_puback_until_an_ack_names_them():
    rig = Rig("keep", cloud={"version": 1, "upload": 0})
    rig.broker.acks = False  # PUBACKed by the broker, never stored by the cloud
    agent = rig.boot()
    rig.run(35)
    old = queued(rig.broker.frames())
    assert len(old) >= 4 and old[0]["type"] == "birth"  # the boot's birth, then data
    assert agent.outbox.depth == len(old) == len(agent.inflight)
    assert rig.broker.subscriptions == [topics.downlink_filter("T0001")]  # acks arrive there
    rig.broker.acks = True  # new frames are acked from now on, the old ones never were
    rig.run(20)
    assert agent.outbox.depth == len(old)
    rig.run(40)  # past ACK_TIMEOUT: go back, everything unacknowledged again
    assert agent.outbox.depth == 0
    n = counts(queued(rig.broker.frames()))
    twice = set(k for k, c in n.items() if c == 2)
    olds = set((f["boot"], f["seq"]) for f in old)
    assert olds <= twice and len(twice - olds) <= 1  # at most the newest, still in flight
    assert max(n.values()) == 2
    assert agent.error_counts()["ack_timeout"] == 1
    assert [m for m in rig.log if m.startswith("no ack for %d s" % agent_mod.ACK_TIMEOUT)]


def test_unacked_frames_go_again_after_a_reconnect_oldest_first():
    rig = Rig("reconnect", cloud={"version": 1, "upload": 0})
    rig.broker.acks = False
    agent = rig.boot()
    rig.run(30)
    old = seqs(queued(rig.broker.frames()))
    rig.broker.cut()  # e.g. the broker crashed and lost what it had acknowledged
    rig.broker.acks = True
    before = len(rig.broker.published)
    rig.run(20)
    assert rig.broker.sessions == 2
    after = rig.broker.frames()[before:]
    assert after[0]["type"] == "birth" and after[0]["seq"] > max(old)  # the connect's birth
    again = seqs(queued(after))
    assert again[: len(old)] == old  # the whole unacknowledged queue, in order, first
    assert again == sorted(again)
    assert agent.outbox.depth == 0 and len(agent.inflight) == 0
    assert "ack_timeout" not in agent.error_counts()  # the reconnect resent, not a timeout


def test_silent_ingest_fills_the_window_then_backs_off_then_drains():
    rig = Rig(
        "window",
        site_over={"sample": {"interval": 1}},
        cloud={"version": 1, "upload": 0, "heartbeat": 3600},
    )
    rig.broker.acks = False
    agent = rig.boot()
    rig.run(600)  # ten minutes of samples, one frame each
    sent = queued(rig.broker.frames())
    window = agent_mod.WINDOW
    fl = agent.inflight
    # no new frame while the window is full; the same oldest ones again per
    # timeout: 60 s, then 120, 240 (doubling while nothing is acked)
    assert fl.timeouts == 3 and fl.timeout == 8 * agent_mod.ACK_TIMEOUT
    assert len(set(seqs(sent))) == window
    assert len(sent) == window * (1 + fl.timeouts)
    assert agent.outbox.depth >= 590
    rig.broker.acks = True  # the ingest is back
    rig.run(900)  # the next timeout (480 s) resends, the acks open the window
    assert agent.outbox.depth == 0
    assert fl.timeout == agent_mod.ACK_TIMEOUT  # reset by the first ack
    got = seqs(queued(rig.broker.frames()))
    connect = set()  # each connect's will and birth take two seqs outside the outbox
    for b in rig.broker.frames("birth"):
        if b["seq"] > 0:
            connect.add(b["seq"])
            connect.add(b["seq"] - 1)
    assert sorted(set(got)) == [s for s in range(max(got) + 1) if s not in connect]
    assert agent.outbox.dropped == 0


def test_power_cut_mid_write_with_frames_in_flight_loses_nothing():
    rig = Rig("torn", cloud={"version": 1, "upload": 0})
    rig.broker.acks = False
    cut = {"writes": 0, "at": 6}

    def hook(op, name, nbytes):
        if op == "write" and name.endswith(".seg"):
            cut["writes"] += 1
            if cut["writes"] == cut["at"]:
                return nbytes // 2  # the power fails halfway through this record
        return None

    rig.hal.outbox_crash = hook
    first = rig.boot()
    while cut["writes"] < cut["at"]:
        rig.run(1)
    # the board is dead from here on: no shutdown, the RAM state is gone
    in_flight = seqs(queued(rig.broker.frames()))
    assert len(in_flight) == cut["at"] - 1 == len(first.inflight)
    rig.hal.outbox_crash = None
    rig.broker.acks = True
    second = Agent(rig.hal, rig.dir, log=rig.log.append)
    rig.agent = second
    assert second.outbox.depth == len(in_flight) + 1  # plus boot 2's birth
    assert second.outbox.dropped == 0  # a torn tail is an interrupted put, not a loss
    rig.run(30)
    assert second.outbox.depth == 0
    resent = [f for f in queued(rig.broker.frames()) if f["boot"] == first.boot]
    assert sorted(set(seqs(resent))) == in_flight  # each one at least twice now, the torn
    assert [k for k, c in counts(resent).items() if c != 2] == []  # one never left the RAM
