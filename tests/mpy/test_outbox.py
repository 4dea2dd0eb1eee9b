"""Flash outbox: runs under CPython (pytest) and real MicroPython.

Power loss is simulated two ways: the outbox's ``crash`` hook stops a write
after k bytes (as a power cut would), and files are truncated or corrupted
directly; then a new Outbox is built over the same directory, as after a
reboot.
"""

import os
import time

from edge.outbox import OVERHEAD, Outbox, PowerCut


def fresh_dir(name):
    """An empty directory of its own; removed at exit where the platform can."""
    try:
        import atexit
        import shutil
        import tempfile
    except ImportError:  # MicroPython: in-memory filesystem, gone with the process
        stamp = time.ticks_ms()
        n = 0
        while True:
            path = "/tmp/mm-outbox-%s-%d-%d" % (name, stamp, n)
            try:
                os.mkdir(path)
                return path
            except OSError:
                n += 1
    path = tempfile.mkdtemp(prefix="mm-outbox-%s-" % name)
    atexit.register(shutil.rmtree, path, True)
    return path


def frame(i, size=40):
    """A recognisable frame: its number repeated, so corruption cannot pass as data."""
    head = b"F%05d:" % i
    return head + bytes([i % 251]) * (size - len(head))


def drain(ob):
    return ob.peek(100000)


def segs(path):
    return sorted(n for n in os.listdir(path) if n.endswith(".seg"))


def size(path):
    return os.stat(path)[6]


def cut_after(k, names=("seg",)):
    """A crash hook that cuts the next write to a file ending in one of ``names``."""
    state = {"armed": True}

    def hook(op, name, nbytes):
        if op == "write" and state["armed"] and name.split(".")[-1] in names:
            state["armed"] = False
            return k
        return None

    return hook


def test_fifo_with_original_bytes_and_kinds():
    d = fresh_dir("fifo")
    ob = Outbox(d)
    ids = [ob.put(frame(i), "alarm" if i == 3 else "data") for i in range(6)]
    assert ids == [1, 2, 3, 4, 5, 6]
    assert ob.depth == 6
    got = ob.peek(4)
    assert [(r, k) for r, k, _ in got] == [(1, "data"), (2, "data"), (3, "data"), (4, "alarm")]
    assert [b for _, _, b in got] == [frame(i) for i in range(4)]
    # peek does not consume: the same frames come again until acked
    assert ob.peek(2) == got[:2]
    ob.ack([1, 2])
    assert ob.depth == 4
    assert [r for r, _, _ in ob.peek(10)] == [3, 4, 5, 6]


def test_survives_reboot_and_ids_keep_increasing():
    d = fresh_dir("reboot")
    ob = Outbox(d)
    for i in range(5):
        ob.put(frame(i), "data")
    ob.ack([1, 2])
    ob = Outbox(d)
    assert ob.depth == 3
    assert [(r, b) for r, _, b in drain(ob)] == [(3, frame(2)), (4, frame(3)), (5, frame(4))]
    assert ob.put(frame(9), "data") == 6
    ob.ack([3, 4, 5, 6])
    assert ob.depth == 0
    assert segs(d) == []
    ob = Outbox(d)
    assert ob.depth == 0 and drain(ob) == []
    assert ob.put(frame(10), "data") == 7  # never reuses an acknowledged id


def test_out_of_order_ack():
    d = fresh_dir("ooo")
    ob = Outbox(d)
    for i in range(4):
        ob.put(frame(i), "data")
    ob.ack([2, 4, 99, 2])
    assert ob.depth == 2
    assert [r for r, _, _ in drain(ob)] == [1, 3]
    ob.ack([1])
    # the persisted head moved past 1 and 2; 4 was acknowledged out of
    # order, which is kept in RAM only, so it comes again (at least once)
    assert [r for r, _, _ in drain(Outbox(d))] == [3, 4]


def test_power_cut_in_every_byte_of_a_put():
    for k in range(OVERHEAD + 40):
        d = fresh_dir("cut%d" % k)
        ob = Outbox(d)
        for i in range(3):
            ob.put(frame(i), "data")
        ob.ack([1])
        ob._crash = cut_after(k)
        try:
            ob.put(frame(3), "data")
        except PowerCut:
            pass
        else:
            raise AssertionError("hook did not fire")
        ob = Outbox(d)
        got = drain(ob)
        # nothing accepted before the cut is lost, nothing torn comes back
        assert [(r, b) for r, _, b in got] == [(2, frame(1)), (3, frame(2))], k
        assert ob.dropped == 0
        # and the queue keeps working: the next frame follows in order
        ob.put(frame(5), "alarm")
        assert [r for r, _, _ in drain(Outbox(d))] == [2, 3, 4]


def test_cut_write_in_a_fresh_segment_is_not_appended_after():
    d = fresh_dir("fresh")
    ob = Outbox(d, budget=4096, seg_bytes=256)
    n = 0
    while len(segs(d)) < 2:
        ob.put(frame(n), "data")
        n += 1
    before = n
    existing = segs(d)

    def hook(op, name, nbytes):
        # cut the first write to a segment that did not exist yet
        return 7 if op == "write" and name not in existing else None

    ob._crash = hook
    try:
        while True:
            ob.put(frame(n), "data")
            n += 1
    except PowerCut:
        pass
    ob = Outbox(d, budget=4096, seg_bytes=256)
    got = drain(ob)
    assert [b for _, _, b in got] == [frame(i) for i in range(n)]
    assert n > before
    ob.put(frame(n), "data")
    assert [b for _, _, b in drain(Outbox(d, budget=4096, seg_bytes=256))][-1] == frame(n)


def test_truncated_last_segment_at_any_point():
    d0 = fresh_dir("trunc-src")
    ob = Outbox(d0)
    for i in range(4):
        ob.put(frame(i), "data")
    name = segs(d0)[-1]
    with open(d0 + "/" + name, "rb") as f:
        full = f.read()
    rec = len(frame(0)) + OVERHEAD
    for cut in range(0, len(full) + 1, 5):
        d = fresh_dir("trunc")
        with open(d + "/" + name, "wb") as f:
            f.write(full[:cut])
        got = drain(Outbox(d))
        whole = cut // rec
        assert [b for _, _, b in got] == [frame(i) for i in range(whole)], cut


def test_corrupt_record_in_an_old_segment_is_skipped_and_counted():
    d = fresh_dir("corrupt")
    ob = Outbox(d, budget=8192, seg_bytes=256)
    for i in range(12):
        ob.put(frame(i), "data")
    first = d + "/" + segs(d)[0]
    with open(first, "rb") as f:
        buf = bytearray(f.read())
    rec = len(frame(0)) + OVERHEAD
    buf[rec + 20] ^= 0xFF  # a payload byte of the second record
    with open(first, "wb") as f:
        f.write(buf)
    ob = Outbox(d, budget=8192, seg_bytes=256)
    got = drain(ob)
    assert [b for _, _, b in got] == [frame(i) for i in range(12) if i != 1]
    assert ob.dropped == 1
    assert Outbox(d, budget=8192, seg_bytes=256).dropped == 1  # persisted


def test_truncated_older_segment_counts_its_loss():
    d = fresh_dir("oldtrunc")
    ob = Outbox(d, budget=8192, seg_bytes=256)
    for i in range(8):
        ob.put(frame(i), "data")
    first = d + "/" + segs(d)[0]
    with open(first, "rb") as f:
        buf = f.read()
    with open(first, "wb") as f:
        f.write(buf[:-3])  # the last record of a segment that is not the newest
    ob = Outbox(d, budget=8192, seg_bytes=256)
    assert [b for _, _, b in drain(ob)] == [frame(i) for i in range(8) if i != 4]
    assert ob.dropped == 1


def test_ids_are_not_reissued_after_the_newest_segment_was_acked():
    d = fresh_dir("reissue")
    ob = Outbox(d, budget=8192, seg_bytes=256)
    for i in range(8):
        ob.put(frame(i), "data")
    assert len(segs(d)) == 2
    ob.ack([6, 7, 8])  # the whole newest segment, out of order
    assert len(segs(d)) == 1
    ob = Outbox(d, budget=8192, seg_bytes=256)
    assert ob.put(frame(9), "data") == 9


def test_budget_drops_oldest_data_and_keeps_alarms():
    d = fresh_dir("budget")
    ob = Outbox(d, budget=2048, seg_bytes=512)
    alarms = []
    for i in range(120):
        kind = "alarm" if i % 10 == 0 else "data"
        rid = ob.put(frame(i), kind)
        if kind == "alarm":
            alarms.append(rid)
        total = 0
        for n in segs(d):
            total += size(d + "/" + n)
        assert total <= 2048
    got = drain(ob)
    ids = [r for r, _, _ in got]
    assert ids == sorted(ids)
    # every alarm is still there, data was dropped oldest first
    assert [r for r, k, _ in got if k == "alarm"] == alarms
    # data was dropped oldest first: what is left is the newest data
    data = [r for r, k, _ in got if k == "data"]
    assert data and data == [r for r in range(1, 121) if r not in alarms][-len(data) :]
    assert ob.dropped == 120 - len(got)
    assert ob.depth == len(got)
    again = Outbox(d, budget=2048, seg_bytes=512)
    assert again.dropped == ob.dropped and drain(again) == got


def test_budget_full_of_alarms_drops_oldest_alarms():
    d = fresh_dir("alarms")
    ob = Outbox(d, budget=1024, seg_bytes=256)
    for i in range(60):
        ob.put(frame(i), "alarm")
    got = drain(ob)
    assert got[-1][2] == frame(59)
    assert [r for r, _, _ in got] == list(range(got[0][0], 61))
    assert ob.dropped == 60 - len(got) > 0


def test_power_cut_during_a_rewrite_keeps_the_old_segment():
    for k in (0, 10, 100):
        d = fresh_dir("rewrite")
        ob = Outbox(d, budget=1024, seg_bytes=256)
        n = 0
        while ob.used + len(frame(n)) + OVERHEAD <= 1024:
            ob.put(frame(n), "alarm" if n % 3 == 0 else "data")
            n += 1
        before = drain(ob)
        ob._crash = cut_after(k, names=("tmp",))
        try:
            ob.put(frame(n), "data")  # needs room: rewrites the oldest segment
        except PowerCut:
            pass
        else:
            raise AssertionError("no rewrite happened")
        assert drain(Outbox(d, budget=1024, seg_bytes=256)) == before


def test_lone_temp_file_is_promoted():
    # FAT cannot rename over a file: the outbox removes the original first,
    # so a crash right then leaves only the complete .tmp behind
    d = fresh_dir("fat")
    ob = Outbox(d)
    for i in range(3):
        ob.put(frame(i), "data")
    name = segs(d)[0]
    os.rename(d + "/" + name, d + "/" + name + ".tmp")
    assert [b for _, _, b in drain(Outbox(d))] == [frame(0), frame(1), frame(2)]


def test_damaged_meta_resends_rather_than_loses():
    d = fresh_dir("meta")
    ob = Outbox(d)
    for i in range(3):
        ob.put(frame(i), "data")
    ob.ack([1])
    with open(d + "/meta", "rb") as f:
        meta = f.read()
    with open(d + "/meta", "wb") as f:
        f.write(b"XXXX" + meta[4:])
    # head unknown: frame 1 comes again (a duplicate the cloud drops), none lost
    assert [r for r, _, _ in drain(Outbox(d))] == [1, 2, 3]


def test_bad_input_is_refused():
    ob = Outbox(fresh_dir("bad"), budget=1024, seg_bytes=256)
    for args in ((b"", "data"), (b"x", "death"), (b"x", "weird"), (b"x" * 2000, "data")):
        try:
            ob.put(*args)
        except ValueError:
            pass
        else:
            raise AssertionError(args)
    assert ob.depth == 0
    for kw in ({"budget": 100, "seg_bytes": 256}, {"seg_bytes": 10}, {"keep": ("nope",)}):
        try:
            Outbox(fresh_dir("badc"), **kw)
        except ValueError:
            pass
        else:
            raise AssertionError(kw)
