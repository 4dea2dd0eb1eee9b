"""Store-and-forward queue of encoded frames on the terminal's flash.

Interface (thingsboard-gateway style)::

    ob = Outbox("/data/outbox", budget=65536)
    rid = ob.put(frame_bytes, "data")        # durable when it returns
    for rid, kind, payload in ob.peek(10):   # oldest first, original bytes
        publish(kind, payload)               # QoS 1
    ob.ack([rid, ...])                       # once the cloud says it stored them

The agent acknowledges a frame when the cloud's ``ack`` frame names it, not
on the broker's PUBACK (a broker crash loses what it had PUBACKed; see
``edge/inflight.py``). Frames published but not yet acknowledged stay here
and count against the budget; ``peek(n, after)`` skips them while they wait.
Frames are resent byte for byte, so their timestamps and sequence numbers
stay as they were when first queued; the cloud deduplicates on
(terminal, boot, seq). Delivery is at least once: ``peek`` returns the same
frames until they are acknowledged, and acknowledgements that had not moved
the persisted head before a reboot are forgotten (those frames go again).

On flash
--------
``<dir>/%08x.seg`` segment files named after their first record id (so the
names sort oldest first), and ``<dir>/meta``. A segment is a run of records::

    +-------+------+--------+--------+---------------+---------+
    | 0xA5  | kind | len    | id     | payload       | crc32   |
    | 1 B   | 1 B  | u16 BE | u32 BE | len bytes     | u32 BE  |
    +-------+------+--------+--------+---------------+---------+

``kind`` is the frame's protocol typecode, ``crc32`` covers every byte
before it. ``put`` appends one record to the newest segment and flushes
(``flush`` is the durability point on MicroPython's littlefs and FAT; there
is no ``fsync``). A power cut in the middle leaves a torn record at the end:
on start-up every segment is parsed, damaged bytes are skipped (the parser
resynchronises on the next record whose header and CRC check out) and the
segment is rewritten with its good records. A torn tail is an interrupted
``put`` that never returned; damage anywhere else counts as dropped frames.

Everything that replaces a file (``meta``, a rewritten segment) is written
to ``<name>.tmp`` and renamed over the original. Where the filesystem cannot
rename over an existing file (FAT) the original is removed first; a ``.tmp``
found alone at start-up is therefore complete and is promoted, a ``.tmp``
beside its original is an unfinished rewrite and is deleted.

``meta`` holds the head (lowest id that may be unacknowledged; records below
it are skipped), the next id (so ids are never issued twice, even after the
newest segment was deleted) and the ``dropped`` counter, with a CRC. An
unreadable meta makes the queue resend everything still on flash:
duplicates, never losses.

Budget
------
The files never exceed ``budget`` bytes (records incl. 12 bytes overhead).
To make room, ``put`` first rewrites segments holding acknowledged records,
then rewrites the oldest segment that holds frames of a kind not in ``keep``
(default: everything but alarms), dropping those frames; only when nothing
but kept frames remain is the oldest segment dropped whole. Dropping works a
segment at a time, so a full queue rewrites flash once per segment, not once
per frame. Every dropped unacknowledged frame is counted in ``dropped``.

RAM: about 5 bytes per queued frame (ids and kinds of the index), plus one
segment read at a time by ``peek`` and during rewrites.
"""

import os
import struct
from array import array

from protocol.frames import TYPECODES, TYPES_BY_CODE

try:
    import binascii

    _hw_crc32 = getattr(binascii, "crc32", None)  # absent on some port builds
except ImportError:
    _hw_crc32 = None

_MAGIC = 0xA5
_HDR = ">BBHI"
_HDR_LEN = 8
OVERHEAD = 12  # header + CRC bytes per record
_ACKED = 255  # index marker: the record no longer needs sending
_META = "meta"
_META_TAG = b"OBX1"
MAX_FRAME = 65535
# birth too: protocol/README.md section 2 wants each boot's birth queued ahead
# of that boot's data, so data recorded offline is explained after a reboot.
QUEUED_KINDS = ("birth", "data", "alarm", "status", "cfgack", "cmdres", "otastat")


class PowerCut(Exception):
    """Raised only by the ``crash`` test hook to stop the outbox mid-operation."""


def _crc(data, value=0):
    if _hw_crc32 is not None:
        return _hw_crc32(data, value)
    # Bitwise CRC-32 (IEEE), slow but only used when the port lacks binascii.crc32.
    value ^= 0xFFFFFFFF
    for b in data:
        value ^= b
        for _ in range(8):
            value = (value >> 1) ^ (0xEDB88320 if value & 1 else 0)
    return value ^ 0xFFFFFFFF


def parse(buf, floor=0):
    """Find the intact records in a segment's bytes.

    Returns ``(records, damaged, torn)``: ``records`` is a list of
    ``(id, code, start, end)`` with the payload at ``buf[start:end]``, ids
    strictly increasing and above ``floor``; ``damaged`` counts runs of bytes
    that were skipped before an intact record, ``torn`` is true when the
    bytes after the last intact record are not a record (a torn tail).
    Never raises on any input.
    """
    mv = memoryview(buf)
    n = len(buf)
    out = []
    pos = 0
    last = floor
    damaged = 0
    skipping = False
    while pos + OVERHEAD <= n:
        if buf[pos] == _MAGIC:
            _, code, ln, rid = struct.unpack_from(_HDR, buf, pos)
            end = pos + _HDR_LEN + ln
            if code != _ACKED and ln and rid > last and end + 4 <= n:
                if _crc(mv[pos:end]) == struct.unpack_from(">I", buf, end)[0]:
                    out.append((rid, code, pos + _HDR_LEN, end))
                    last = rid
                    pos = end + 4
                    if skipping:
                        damaged += 1
                        skipping = False
                    continue
        skipping = True
        pos += 1
    return out, damaged, skipping or pos < n


def record(rid, code, payload):
    """The bytes of one record (what ``put`` appends)."""
    hdr = struct.pack(_HDR, _MAGIC, code, len(payload), rid)
    return hdr + payload + struct.pack(">I", _crc(payload, _crc(hdr)))


class _Seg:
    """Index of one segment file: ids and kind codes of its pending records."""

    def __init__(self, name):
        self.name = name
        self.ids = array("I")
        self.codes = bytearray()
        self.pending = 0  # records still to send
        self.kept = 0  # pending records of a kept kind
        self.nrec = 0  # records in the file, acknowledged ones included
        self.nbytes = 0  # file size

    def find(self, rid):
        ids = self.ids
        lo = 0
        hi = len(ids)
        while lo < hi:
            mid = (lo + hi) >> 1
            if ids[mid] < rid:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(ids) and ids[lo] == rid:
            return lo
        return -1


class Outbox:
    """Bounded, power-loss-safe FIFO of frames in directory ``directory``.

    ``budget``: bytes of flash the queue may use; ``seg_bytes``: size at which
    a new segment file is started; ``keep``: frame kinds dropped last when
    the budget is exhausted. ``crash`` is a test hook: called as
    ``crash(op, name, size)`` before every write, rename and remove; when it
    returns an int ``k`` the outbox writes only the first ``k`` bytes (for a
    write) and raises :class:`PowerCut`, as if the power failed there. A
    real deployment passes nothing.

    File system errors (``OSError``, e.g. flash full) propagate; the queue
    stays consistent on flash and is re-read by the next construction.
    """

    def __init__(self, directory, budget=65536, seg_bytes=4096, keep=("alarm",), crash=None):
        if seg_bytes < 256 or budget < 2 * seg_bytes:
            raise ValueError("need seg_bytes >= 256 and budget >= 2 * seg_bytes")
        for kind in keep:
            _code(kind)
        self.dir = directory.rstrip("/") or "/"
        self.budget = budget
        self.seg_bytes = seg_bytes
        self._keep = bytes([TYPECODES[k] for k in keep])
        self._crash = crash
        self._segs = []
        self._head = 1
        self._next = 1
        self._total = 0
        self._depth = 0
        self._dropped = 0
        self._seal = False
        _mkdirs(self.dir)
        self._recover()

    # -- public ----------------------------------------------------------------

    @property
    def depth(self):
        """Frames waiting to be acknowledged."""
        return self._depth

    @property
    def dropped(self):
        """Frames lost to the budget or to damaged flash, since the queue was created."""
        return self._dropped

    @property
    def used(self):
        """Bytes of flash the segment files take."""
        return self._total

    def put(self, frame, kind):
        """Queue ``frame`` (bytes) of uplink ``kind``; return its id.

        The record is on flash when this returns. Makes room first when the
        budget is exhausted (see the module doc). Raises ``ValueError`` for
        an unknown kind or an empty or oversized frame.
        """
        code = _code(kind)
        n = len(frame)
        size = n + OVERHEAD
        if n == 0 or n > MAX_FRAME or size > self.budget - self.seg_bytes:
            raise ValueError("frame of %d bytes does not fit the outbox" % n)
        self._make_room(size)
        rid = self._next
        fresh = not self._segs or self._seal or self._segs[-1].nbytes >= self.seg_bytes
        seg = _Seg("%08x.seg" % rid) if fresh else self._segs[-1]
        rec = record(rid, code, frame)
        path = self._path(seg.name)
        try:
            # A fresh segment's name is above every stored id, so whatever a
            # file of that name holds is debris of a failed put: truncate it.
            f = open(path, "wb" if fresh else "ab")
            try:
                self._write(f, seg.name, rec)
                f.flush()
            finally:
                f.close()
        except Exception:
            # The file may now end in a partial record: never append after
            # it (recovery and peek skip it, as they skip any torn tail).
            self._seal = True
            if not fresh:
                seg.nbytes += size
                self._total += size
            raise
        if fresh:
            self._segs.append(seg)
            self._seal = False
        self._next = rid + 1
        seg.ids.append(rid)
        seg.codes.append(code)
        seg.pending += 1
        seg.nrec += 1
        if code in self._keep:
            seg.kept += 1
        seg.nbytes += size
        self._total += size
        self._depth += 1
        return rid

    def peek(self, n, after=0):
        """Up to ``n`` unacknowledged frames with an id above ``after``, oldest
        first: ``[(id, kind, bytes)]``.

        ``after`` is the highest id the caller already has in flight, so the
        frames waiting for their acknowledgement are skipped (segments that
        hold only such frames are not even read). Reads flash and checks every
        returned record's CRC; a record that went bad since start-up is
        dropped (and counted), never returned.
        """
        out = []  # type: list
        lost = 0
        for seg in self._segs:
            if len(out) >= n:
                break
            if not seg.pending or seg.ids[-1] <= after:
                continue
            buf = self._read(seg.name)
            recs = parse(buf)[0]
            ids = seg.ids
            j = 0
            for rid, code, start, end in recs:
                while j < len(ids) and ids[j] < rid:
                    lost += self._forget(seg, j)
                    j += 1
                if j < len(ids) and ids[j] == rid:
                    if seg.codes[j] != _ACKED and rid > after:
                        out.append((rid, TYPES_BY_CODE[code], buf[start:end]))
                        if len(out) >= n:
                            break
                    j += 1
            else:
                while j < len(ids):
                    lost += self._forget(seg, j)
                    j += 1
        if lost:
            self._dropped += lost
            self._ack_done(force=True)  # persist the counter
        return out

    def ack(self, ids):
        """Mark frames delivered. Unknown or already acknowledged ids are ignored."""
        for rid in ids:
            for seg in self._segs:
                if seg.ids and seg.ids[0] <= rid <= seg.ids[-1]:
                    j = seg.find(rid)
                    if j >= 0:
                        self._forget(seg, j)
                    break
        self._ack_done()

    # -- bookkeeping -----------------------------------------------------------

    def _forget(self, seg, j):
        """Mark index entry ``j`` done; 1 if it was pending, else 0."""
        code = seg.codes[j]
        if code == _ACKED:
            return 0
        if code in self._keep:
            seg.kept -= 1
        seg.codes[j] = _ACKED
        seg.pending -= 1
        self._depth -= 1
        return 1

    def _first_pending(self):
        for seg in self._segs:
            if seg.pending:
                for j in range(len(seg.ids)):
                    if seg.codes[j] != _ACKED:
                        return seg.ids[j]
        return self._next

    def _ack_done(self, force=False):
        """Persist the head, then delete segments with nothing left to send."""
        head = self._first_pending()
        if self._segs and not self._segs[-1].pending:
            force = True  # the newest id is about to leave the flash: persist next
        if head != self._head or force:
            self._head = head
            self._save_meta()
        keep = []
        for seg in self._segs:
            if seg.pending:
                keep.append(seg)
            else:
                self._remove(seg.name)
                self._total -= seg.nbytes
        self._segs = keep

    def _make_room(self, size):
        while self._segs and self._total + size > self.budget:
            seg = None
            for s in self._segs:  # 1: reclaim acknowledged records
                if s.nrec > s.pending:
                    seg = s
                    break
            if seg is None:  # 2: the oldest frames not kept in preference
                for s in self._segs:
                    if s.pending > s.kept:
                        seg = s
                        break
            if seg is not None:
                self._rewrite(seg)
            else:  # 3: nothing but kept frames: the oldest segment goes
                seg = self._segs[0]
                self._dropped += seg.pending
                self._depth -= seg.pending
                seg.pending = 0
            self._ack_done(force=True)

    def _rewrite(self, seg):
        """Rewrite ``seg`` without acknowledged records, and without frames of
        kinds not kept when it holds no acknowledged records (so one call
        either reclaims acknowledged space or drops, never both)."""
        drop_unkept = seg.nrec == seg.pending
        buf = self._read(seg.name)
        recs = parse(buf)[0]
        ids = array("I")
        codes = bytearray()
        kept = 0
        parts = []
        for rid, code, start, end in recs:
            j = seg.find(rid)
            if j < 0 or seg.codes[j] == _ACKED:
                continue
            if drop_unkept and code not in self._keep:
                continue
            ids.append(rid)
            codes.append(code)
            if code in self._keep:
                kept += 1
            parts.append(buf[start - _HDR_LEN : end + 4])
        gone = seg.pending - len(ids)
        self._dropped += gone
        self._depth -= gone
        self._total -= seg.nbytes
        if ids:
            seg.nbytes = self._replace(seg.name, parts)
            self._total += seg.nbytes
        else:
            self._remove(seg.name)
            seg.nbytes = 0
        seg.ids = ids
        seg.codes = codes
        seg.pending = seg.nrec = len(ids)
        seg.kept = kept
        if seg is self._segs[-1]:
            self._seal = False

    # -- recovery --------------------------------------------------------------

    def _recover(self):
        names = os.listdir(self.dir)
        for name in names:
            if name.endswith(".tmp"):
                final = name[:-4]
                if final in names:
                    os.remove(self._path(name))  # unfinished rewrite
                else:
                    os.rename(self._path(name), self._path(final))  # FAT window
        names = sorted(os.listdir(self.dir))
        self._load_meta()
        last = 0
        lost = 0
        segs = [n for n in names if n.endswith(".seg")]
        for i, name in enumerate(segs):
            buf = self._read(name)
            recs, damaged, torn = parse(buf, last)
            if torn and i + 1 < len(segs):
                damaged += 1  # only the newest segment can end in an unfinished put
            lost += damaged
            seg = _Seg(name)
            seg.nbytes = len(buf)
            seg.nrec = len(recs)
            parts = []
            for rid, code, start, end in recs:
                last = rid
                if rid >= self._head:
                    seg.ids.append(rid)
                    seg.codes.append(code)
                    seg.pending += 1
                    if code in self._keep:
                        seg.kept += 1
                    parts.append(buf[start - _HDR_LEN : end + 4])
            if not seg.pending:
                self._remove(name)
                continue
            if damaged or torn:
                seg.nbytes = self._replace(name, parts)
                seg.nrec = seg.pending
            self._segs.append(seg)
            self._total += seg.nbytes
            self._depth += seg.pending
        self._next = max(self._next, self._head, last + 1)
        if lost:
            self._dropped += lost
            self._save_meta()

    def _load_meta(self):
        try:
            buf = self._read(_META)
        except OSError:
            return
        if len(buf) == 20 and buf[:4] == _META_TAG:
            head, nxt, dropped, crc = struct.unpack_from(">IIII", buf, 4)
            if _crc(buf[:16]) == crc:
                self._head = head
                self._next = nxt
                self._dropped = dropped

    def _save_meta(self):
        body = _META_TAG + struct.pack(">III", self._head, self._next, self._dropped)
        self._replace(_META, [body + struct.pack(">I", _crc(body))])

    # -- files -----------------------------------------------------------------

    def _path(self, name):
        return self.dir + "/" + name

    def _read(self, name):
        with open(self._path(name), "rb") as f:
            return f.read()

    def _write(self, f, name, data):
        if self._crash is not None:
            cut = self._crash("write", name, len(data))
            if cut is not None:
                f.write(data[:cut])
                f.flush()
                raise PowerCut(name)
        f.write(data)

    def _op(self, op, name):
        if self._crash is not None and self._crash(op, name, 0) is not None:
            raise PowerCut(name)

    def _remove(self, name):
        self._op("remove", name)
        try:
            os.remove(self._path(name))
        except OSError:
            pass  # already gone: a crash after the decision to delete it

    def _replace(self, name, parts):
        """Atomically make ``name`` hold ``parts``; return its size."""
        tmp = name + ".tmp"
        size = 0
        with open(self._path(tmp), "wb") as f:
            for p in parts:
                self._write(f, tmp, p)
                size += len(p)
            f.flush()  # one flash commit for the whole file, before the rename
        self._op("rename", name)
        try:
            os.rename(self._path(tmp), self._path(name))
        except OSError:
            # FAT will not rename over a file; recovery promotes a lone .tmp.
            self._remove(name)
            os.rename(self._path(tmp), self._path(name))
        return size


def _code(kind):
    if kind not in QUEUED_KINDS:
        raise ValueError("kind %r is not one of %s" % (kind, QUEUED_KINDS))
    return TYPECODES[kind]


def _mkdirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            continue
        cur += "/" + part if (cur or path.startswith("/")) else part
        try:
            os.mkdir(cur)
        except OSError:
            pass  # exists; a real failure shows up at the first listdir
