"""The in-flight window (edge/inflight.py) and the outbox's ``peek(n, after)``.

Runs under CPython (pytest) and real MicroPython.
"""

from test_outbox import frame as raw
from test_outbox import fresh_dir, segs

from edge.inflight import Inflight
from edge.outbox import Outbox


def test_window_fills_and_acks_free_it_in_any_order():
    fl = Inflight(size=3, timeout=60, max_timeout=600)
    for rid, seq in ((1, 10), (2, 11), (3, 12)):
        fl.sent(rid, 7, seq, 100)
    assert (len(fl), fl.room(), fl.cursor) == (3, 0, 3)
    assert fl.apply(7, [[12, 1]]) == [3]  # newest first: acks need not come in order
    assert fl.apply(6, [[10, 2]]) == []  # another boot's seqs
    assert fl.apply(7, [[0, 11]]) == [1]
    assert fl.apply(7, [[0, 11]]) == []  # applied twice: nothing more
    assert (len(fl), fl.room(), fl.acked) == (1, 2, 2)
    assert fl.cursor == 3  # what was sent stays skipped until a go-back


def test_timeout_goes_back_and_backs_off_only_while_nothing_is_acked():
    fl = Inflight(size=8, timeout=60, max_timeout=300)
    fl.sent(5, 1, 0, 1000)
    assert not fl.expired(1059)
    assert fl.expired(1060)
    fl.timed_out()
    assert (len(fl), fl.cursor, fl.timeout, fl.timeouts) == (0, 0, 120, 1)
    fl.sent(5, 1, 0, 1060)
    assert not fl.expired(1179)
    fl.timed_out()
    fl.timed_out()
    assert fl.timeout == 300  # 60 -> 120 -> 240 -> capped at 300
    fl.sent(5, 1, 0, 2000)
    fl.sent(6, 1, 1, 2000)
    assert fl.apply(1, [[0, 1]]) == [5]
    assert fl.timeout == 60  # the cloud answers again: back to the base timeout
    fl.timed_out()  # rid 6's ack was lost while others came: resend, no backoff
    assert fl.timeout == 60


def test_bad_window_settings_raise():
    for kw in ({"size": 0}, {"timeout": 0}, {"timeout": 100, "max_timeout": 50}):
        try:
            Inflight(**kw)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % (kw,))


def test_peek_after_skips_frames_in_flight_without_reading_their_segments():
    d = fresh_dir("after")
    reads = []
    ob = Outbox(d, budget=4096, seg_bytes=256)
    ids = [ob.put(raw(i, 60), "data") for i in range(12)]  # 4 frames per segment
    names = segs(d)
    assert names == ["%08x.seg" % ids[k] for k in (0, 4, 8)]
    ob._read = lambda name, _r=ob._read: reads.append(name) or _r(name)
    assert [r for r, _k, _p in ob.peek(4)] == ids[:4]
    del reads[:]
    got = ob.peek(2, after=ids[6])
    assert [r for r, _k, _p in got] == ids[7:9]
    assert got[0][2] == raw(7, 60)
    assert reads == names[1:]  # the oldest segment holds only frames in flight: not read
    assert ob.peek(5, after=ids[-1]) == []
    ob.ack([ids[8], ids[2]])  # out of order, as the cloud's acks may come
    assert [r for r, _k, _p in ob.peek(20, after=ids[6])] == ids[7:8] + ids[9:]
    assert ob.depth == 10  # in flight or not: waiting until acknowledged
