"""Agent: code a terminal never needs in its steady state is never imported.

On a board every imported module's code stays on the heap (docs/agent.md,
"Memory"), so these check which modules the agent's life leaves loaded.
Runs under CPython (pytest) and real MicroPython.
"""

import sys

from test_agent_fakes import START_UNIX, TID, Rig

from protocol import frames, topics


def forget(name):
    """Make the next import of ``name`` load it afresh (CPython keeps the package attribute)."""
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    if getattr(sys.modules.get(pkg), attr, None) is not None:
        delattr(sys.modules[pkg], attr)


def test_agent_never_imports_the_cloud_side_field_converters():
    ack = frames.encode(
        {
            "type": "ack",
            "tid": TID,
            "boot": 0,
            "seq": 9,
            "ts": START_UNIX,
            "unsynced": False,
            "for_boot": 1,
            "ranges": [[0, 2]],
        }
    )
    forget("protocol.cloudfields")
    rig = Rig(
        "lazy-cloudfields",
        cloud={
            "version": 1,
            "upload": 0,
            "heartbeat": 30,
            "thresholds": [{"channel": "leak1.io", "cond": "hi", "warn": 1, "alarm": 2}],
        },
    )
    rig.broker.acks = False  # the scripted broker's acks would decode uplink frames
    rig.boot()
    rig.run(65)  # births, samples, an alarm, status frames
    rig.broker.deliver(topics.downlink(TID, "ack"), ack)
    rig.cmd(1, "sample_now")
    rig.config(2, upload=0, heartbeat=60)
    rig.run(2)
    assert "protocol.cloudfields" not in sys.modules
    kinds = [t.rsplit("/", 1)[1] for t, _ in rig.broker.published]
    for kind in ("birth", "data", "alarm", "status", "cmdres", "cfgack"):
        assert kind in kinds, kind
    assert rig.agent.errors == {}
