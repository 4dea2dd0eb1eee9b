"""Property tests of the flash outbox (CPython, hypothesis).

Random workloads, power cuts at random write/rename/remove points and
random damage to the files. After every "reboot" (a new Outbox over the same
directory) the queue must return only intact frames, oldest first, and
nothing it had accepted and not yet seen acknowledged may be missing unless
it was dropped for the budget (and then counted). The example tests that
also run on MicroPython are in tests/mpy/test_outbox.py.
"""

import os
import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.outbox import OVERHEAD, Outbox, PowerCut

BUDGET = 2048
SEG = 256

op = st.one_of(
    st.tuples(st.just("put"), st.integers(1, 200), st.sampled_from(["data", "data", "alarm"])),
    st.tuples(st.just("ack"), st.integers(0, 6), st.booleans()),
    st.tuples(st.just("reboot"), st.just(0), st.just(False)),
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Workload:
    """Drives an Outbox and remembers every frame it was given."""

    def __init__(self, budget=BUDGET, seg=SEG):
        self.dir = tempfile.mkdtemp(prefix="mm-outbox-")
        self.budget = budget
        self.seg = seg
        self.frames = {}  # id -> (kind, bytes) of every put that returned
        self.acked = set()  # every id ever acknowledged
        self.n = 0
        self.ob = self.open()

    def open(self, crash=None):
        return Outbox(self.dir, budget=self.budget, seg_bytes=self.seg, crash=crash)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def payload(self, size):
        self.n += 1
        body = b"#%d#" % self.n
        return (body * (size // len(body) + 1))[:size]

    def apply(self, step):
        what, arg, flag = step
        if what == "put":
            frame = self.payload(arg)
            rid = self.ob.put(frame, flag)
            self.frames[rid] = (flag, frame)
        elif what == "ack":
            ids = [r for r, _, _ in self.ob.peek(arg)]
            ids = ids[1::2] if flag else ids  # flag: out of order, with holes
            self.ob.ack(ids)
            self.acked.update(ids)
        else:
            self.ob = self.open(self.ob._crash)

    def check(self, got):
        """Integrity and order of a peek result."""
        ids = [r for r, _, _ in got]
        assert ids == sorted(set(ids)), ids
        for rid, kind, data in got:
            assert rid in self.frames, "returned an id never accepted: %d" % rid
            assert (kind, data) == self.frames[rid], "corrupt frame %d" % rid

    def all(self, ob=None):
        return (ob or self.ob).peek(1 << 30)


@SETTINGS
@given(st.lists(op, max_size=40))
def test_accounting_and_budget_without_faults(steps):
    w = Workload()
    try:
        for step in steps:
            before = w.all()
            w.apply(step)
            after = w.all()
            w.check(after)
            files = [n for n in os.listdir(w.dir) if n.endswith(".seg")]
            used = sum(os.path.getsize(os.path.join(w.dir, n)) for n in files)
            assert used == w.ob.used <= BUDGET
            assert w.ob.depth == len(after)
            # every frame is pending, acknowledged or counted as dropped (an
            # out-of-order ack not yet persisted makes a frame pending again
            # after a reboot: at least once)
            assert (
                len(w.frames) == len(after) + len(w.acked - {r for r, _, _ in after}) + w.ob.dropped
            )
            if step[0] == "put":
                new = max(w.frames)
                kinds = {r: k for r, k, _ in before}
                lost = set(kinds) - {r for r, _, _ in after}
                if any(kinds[r] == "alarm" for r in lost):
                    # alarms go only when no other frame is left to drop
                    assert all(k == "alarm" for r, k, _ in after if r != new)
                lost_data = [r for r in lost if kinds[r] == "data"]
                kept_data = [r for r, k, _ in after if k == "data" and r != new]
                if lost_data and kept_data:
                    assert max(lost_data) < min(kept_data), "dropped newer data first"
    finally:
        w.close()


@SETTINGS
@given(
    st.lists(op, max_size=30),
    op,
    st.integers(0, 40),
    st.integers(0, 300),
)
def test_power_cut_anywhere_loses_nothing_accepted(steps, last, at, cut):
    """Crash the ``at``-th file operation of the last step, cutting a write at ``cut`` bytes."""
    w = Workload()
    try:
        for step in steps:
            w.apply(step)
        before = w.all()
        used = w.ob.used
        calls = {"n": 0}

        def crash(op_, name, nbytes):
            calls["n"] += 1
            if calls["n"] - 1 == at:
                return min(cut, nbytes)
            return None

        w.ob._crash = crash
        issued = max([0, *w.frames])
        crashed = False
        pending_put = None
        try:
            if last[0] == "put":
                pending_put = w.payload(last[1])
                rid = w.ob.put(pending_put, last[2])
                w.frames[rid] = (last[2], pending_put)
                issued = rid
                pending_put = None
            elif last[0] == "ack":
                w.apply(last)
            else:
                w.ob = w.open(crash)
        except PowerCut:
            crashed = True
        if crashed and pending_put is not None:
            # the interrupted put may have reached flash whole; it may come back
            w.frames[max([0, *w.frames]) + 1] = (last[2], pending_put)

        ob = w.open()  # reboot
        got = w.all(ob)
        w.check(got)
        assert ob.depth == len(got)
        got_ids = {r for r, _, _ in got}
        before_ids = [r for r, _, _ in before]
        missing = [r for r in before_ids if r not in got_ids]
        if last[0] == "reboot" or (last[0] == "put" and used + last[1] + OVERHEAD <= BUDGET):
            assert missing == [], "lost accepted frames %s" % missing
        elif last[0] == "ack":
            acked_now = {r for r, _, _ in before[: last[1]]}
            assert set(missing) <= acked_now
        else:  # a put that had to make room may have dropped frames, data first
            kinds = {r: k for r, k, _ in before}
            if any(kinds[r] == "alarm" for r in missing):
                assert all(r in missing for r in before_ids if kinds[r] == "data")
        # frames acknowledged out of order may come again; nothing else new
        # but the interrupted put itself
        extra = got_ids - set(before_ids) - w.acked
        assert len(extra) <= 1 and (not extra or last[0] == "put")
        # the queue goes on working after the reboot; an id that a put
        # returned is never issued again
        rid = ob.put(b"after", "alarm")
        assert rid > max([issued, *got_ids])
        assert ob.peek(1 << 30)[-1] == (rid, "alarm", b"after")
    finally:
        w.close()


@SETTINGS
@given(st.lists(op, min_size=1, max_size=30), st.floats(0, 1))
def test_truncated_newest_segment_keeps_order_and_older_data(steps, where):
    w = Workload()
    try:
        for step in steps:
            w.apply(step)
        clean = w.open()  # a clean reboot first: the baseline
        before = w.all(clean)
        segs = sorted(n for n in os.listdir(w.dir) if n.endswith(".seg"))
        if not segs:
            return
        newest = os.path.join(w.dir, segs[-1])
        first_in_newest = int(segs[-1][:8], 16)
        size = os.path.getsize(newest)
        with open(newest, "r+b") as f:
            f.truncate(int(size * where))
        ob = w.open()
        got = w.all(ob)
        w.check(got)
        got_ids = [r for r, _, _ in got]
        older = [r for r, _, _ in before if r < first_in_newest]
        newer = [r for r, _, _ in before if r >= first_in_newest]
        assert got_ids[: len(older)] == older
        assert got_ids[len(older) :] == newer[: len(got_ids) - len(older)]
        assert ob.dropped == clean.dropped  # a torn tail is an unfinished put, not a loss
    finally:
        w.close()


@SETTINGS
@given(st.lists(op, min_size=1, max_size=30), st.data())
def test_random_damage_never_returns_corrupt_frames(steps, data):
    w = Workload()
    try:
        for step in steps:
            w.apply(step)
        names = sorted(os.listdir(w.dir))
        if not names:
            return
        for _ in range(data.draw(st.integers(1, 4))):
            name = data.draw(st.sampled_from(names))
            path = os.path.join(w.dir, name)
            with open(path, "rb") as f:
                buf = bytearray(f.read())
            if not buf:
                continue
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] ^= data.draw(st.integers(1, 255))
            with open(path, "wb") as f:
                f.write(buf)
        ob = w.open()
        got = w.all(ob)
        w.check(got)
        assert ob.depth == len(got)
        assert w.all(w.open()) == got  # recovery is stable
    finally:
        w.close()
