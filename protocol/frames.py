"""Frames: the dicts both sides use, their CBOR layout, and validation.

A frame is a plain dict (keys exactly as below); on the wire it is one CBOR
array, flattened for size::

    [version, typecode, tid, boot, seq, ts, flags, <type fields...>]

``flags`` bit 0 is ``unsynced``; other bits are reserved (written 0, ignored
when read).  The type fields, in wire order:

========= ==== ==========================================================
type      code fields
========= ==== ==========================================================
birth     1    fw, cfg, channels ``[[alias, name, unit, kind, exp]...]``,
               optional devices ``[[name, model, status]...]``
data      2    samples ``[[dt, [values...]] or [dt, [values...], [alias,
               code, alias, code...]]...]``
alarm     3    alias, cond, level, state (1 raised, 0 cleared), value,
               threshold
status    4    uptime, queued, dropped, rssi, heap, errors ``{name: n}``
cfgack    5    version, ok, reason
cmdres    6    id, ok, result
death     7    (none)
otareq    8    job, path, off, len
otastat   10   job, state, done, total, reason
config    16   version, config ``{...}``
cmd       17   id, name, args ``{...}``
ack       18   for_boot, ranges ``[first, count, first, count...]``
chunk     19   job, path, off, size, data (a byte string)
========= ==== ==========================================================

A type may end with one *optional* field (:data:`_OPTIONAL`): absent on
the wire and from the dict when the sender did not write it (older senders
do not know it), so the array has 7 + n or 7 + n + 1 elements.

``protocol/README.md`` is the full specification with byte-level examples.

Every function here validates completely and raises only
:class:`~protocol.errors.ProtocolError`: ``encode``/``to_obj`` refuse a bad
dict, ``decode``/``from_obj`` refuse bad bytes or a bad CBOR object (the
cloud may build that object with cbor2; ``from_obj`` accepts anything and
checks types itself).
"""

from protocol import cbor
from protocol.errors import ProtocolError
from protocol.limits import (
    INT_MAX,
    INT_MIN,
    MAX_ACK_RANGES,
    MAX_CHANNELS,
    MAX_CHUNK,
    MAX_COND,
    MAX_COUNTERS,
    MAX_DEPTH,
    MAX_EXP,
    MAX_FRAME_BYTES,
    MAX_STR,
    MAX_TEXT,
    MAX_TID,
    RSSI_MAX,
    RSSI_MIN,
    U32_MAX,
    VERSION,
)

TYPECODES = {
    "birth": 1,
    "data": 2,
    "alarm": 3,
    "status": 4,
    "cfgack": 5,
    "cmdres": 6,
    "death": 7,
    "otareq": 8,
    "otastat": 10,
    "config": 16,
    "cmd": 17,
    "ack": 18,
    "chunk": 19,
}
TYPES_BY_CODE = {code: name for name, code in TYPECODES.items()}
UPLINK_TYPES = (
    "birth",
    "data",
    "alarm",
    "status",
    "cfgack",
    "cmdres",
    "death",
    "otareq",
    "otastat",
)
DOWNLINK_TYPES = ("config", "cmd", "ack", "chunk")

KINDS = (
    "leak",
    "power",
    "energy",
    "voltage",
    "current",
    "pf",
    "temperature",
    "humidity",
    "contact",
    "demand",
    "other",
)

# What a birth's ``devices`` may say about the profile each device is polled
# with (docs/sensors.md): a manufacturer's published map, a reference map
# standing in for a class of device, a test device of the suite, or a profile
# the site added. Decoders accept any name here so a later status does not
# cost a terminal its birth; receivers treat an unknown one as not documented.
PROFILE_STATUSES = ("documented", "reference", "test", "site")

# quality codes of a data sample; GOOD is implied by absence, never sent
GOOD = 0
UNREACHABLE = 1
OUT_OF_RANGE = 2
STALE = 3
QUALITY_NAMES = {UNREACHABLE: "unreachable", OUT_OF_RANGE: "out_of_range", STALE: "stale"}

WARNING = 1
ALARM = 2

COMMON_KEYS = ("type", "tid", "boot", "seq", "ts", "unsynced")
_HEAD = 7  # wire elements before the type fields
_FLAG_UNSYNCED = 1


# -- public API ----------------------------------------------------------------


def encode(frame):
    """Validate ``frame`` and return its canonical CBOR bytes.

    Raises ProtocolError for an invalid frame, and ``too_large`` when the
    bytes would exceed MAX_FRAME_BYTES (split the batch and retry).
    """
    buf = cbor.dumps(to_obj(frame))
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", "frame_len", len(buf), MAX_FRAME_BYTES)
    return buf


def decode(buf):
    """Parse and validate one frame from ``buf`` (the whole MQTT payload).

    Returns the frame dict.  Raises only ProtocolError, for any input:
    ``too_large`` first (before parsing), then the CBOR reasons of
    :mod:`protocol.cbor`, then the frame reasons of :func:`from_obj`.
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_field", "payload")
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", "pay_len", len(buf), MAX_FRAME_BYTES)
    return from_obj(cbor.loads(buf))


def to_obj(frame):
    """Validate a frame dict and return its wire array (a list).

    Trailing None values of a data sample are dropped (they are implied).
    """
    if not isinstance(frame, dict):
        raise ProtocolError("bad_field", "not_dict")
    ftype = frame.get("type")
    if not isinstance(ftype, str) or ftype not in _SPECS:
        raise ProtocolError("bad_type", "type_name", ftype)
    spec = _SPECS[ftype]
    extra = _OPTIONAL.get(ftype)
    for key in frame:
        if key not in COMMON_KEYS and not _spec_has(spec, key):
            if extra is None or key != extra[0]:
                raise ProtocolError("bad_field", "extra_key", ftype, key)
    obj = [
        VERSION,
        TYPECODES[ftype],
        check_tid(_get(frame, "tid")),
        _u32(_get(frame, "boot"), "boot"),
        _u32(_get(frame, "seq"), "seq"),
        _u32(_get(frame, "ts"), "ts"),
        _FLAG_UNSYNCED if _bool(_get(frame, "unsynced"), "unsynced") else 0,
    ]
    for key, to_wire, _from in spec:
        obj.append(_conv(to_wire)(_get(frame, key), key))
    if extra is not None and extra[0] in frame:
        obj.append(_conv(extra[1])(frame[extra[0]], extra[0]))
    return obj


def from_obj(obj):
    """Validate a decoded wire array and return the frame dict.

    ``obj`` may come from :func:`protocol.cbor.loads` or from another CBOR
    library (the cloud uses cbor2); any Python object is checked, so a
    cbor2 tag object, ``undefined`` or bytes are refused as ``bad_field``.
    """
    if not isinstance(obj, (list, tuple)) or not obj:
        raise ProtocolError("bad_field", "not_array")
    version = obj[0]
    if not _isint(version) or version != VERSION:
        raise ProtocolError("bad_version", "version", version, VERSION)
    code = obj[1] if len(obj) > 1 else -1
    ftype = TYPES_BY_CODE.get(code) if _isint(code) else None
    if ftype is None:
        raise ProtocolError("bad_type", "type_code", code)
    spec = _SPECS[ftype]
    extra = _OPTIONAL.get(ftype)
    n = _HEAD + len(spec)
    if len(obj) != n and (extra is None or len(obj) != n + 1):
        raise ProtocolError(
            "bad_field",
            "elements",
            ftype,
            len(obj),
            n,
            "" if extra is None else " or %d" % (n + 1),
        )
    frame = {
        "type": ftype,
        "tid": check_tid(obj[2]),
        "boot": _u32(obj[3], "boot"),
        "seq": _u32(obj[4], "seq"),
        "ts": _u32(obj[5], "ts"),
        # reserved flag bits are ignored so later versions can add flags
        "unsynced": bool(_u32(obj[6], "flags") & _FLAG_UNSYNCED),
    }
    i = _HEAD
    for key, _to, from_wire in spec:
        frame[key] = _conv(from_wire)(obj[i], key)
        i += 1
    if extra is not None and i < len(obj):
        frame[extra[0]] = _conv(extra[2])(obj[i], extra[0])
    return frame


def check_tid(tid):
    """Return ``tid`` if it is a valid terminal id, else raise ``bad_tid``.

    1..MAX_TID characters of ``[A-Za-z0-9_-]``: never an MQTT wildcard or
    level separator, and usable as the broker username (ACL ``%u``).
    """
    if not isinstance(tid, str) or not 1 <= len(tid) <= MAX_TID:
        raise ProtocolError("bad_tid", "tid_len", MAX_TID)
    for c in tid:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in "_-"):
            raise ProtocolError("bad_tid", "tid_char", tid, c)
    return tid


def head(buf):
    """``(type, tid, boot, seq)`` of an encoded frame, from its first items only.

    For code that needs a frame's identity, not its content: the terminal
    learning the dedup key of a frame it queued as bytes, the cloud
    acknowledging a frame whose body it refused. Checks the array, version,
    type code, tid, boot and seq as :func:`decode` does and reads nothing
    after ``seq``, so a frame that passes here may still fail :func:`decode`.
    Raises ProtocolError (``truncated``, ``unsupported_cbor``,
    ``bad_version``, ``bad_type``, ``bad_tid``, ``bad_field``...).
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise ProtocolError("bad_field", "payload")
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", "pay_len", len(buf), MAX_FRAME_BYTES)
    if not buf:
        raise ProtocolError("truncated", "empty")
    ib = buf[0]
    ai = ib & 0x1F
    if ib >> 5 != 4 or ai > 27:
        raise ProtocolError("bad_field", "head_arr")
    pos = 1
    n = ai
    if ai >= 24:  # a longer head than needed: accepted, as decode does
        k = 1 << (ai - 24)
        if len(buf) < 1 + k:
            raise ProtocolError("truncated", "head_cut")
        n = int.from_bytes(bytes(buf[1 : 1 + k]), "big")
        pos += k
    if n < _HEAD:
        raise ProtocolError("bad_field", "head_min", _HEAD)
    items = []
    for _ in range(5):
        value, pos = cbor.decode(buf, pos)
        items.append(value)
    version = items[0]
    if not _isint(version) or version != VERSION:
        raise ProtocolError("bad_version", "version", version, VERSION)
    code = items[1]
    ftype = TYPES_BY_CODE.get(code) if _isint(code) else None
    if ftype is None:
        raise ProtocolError("bad_type", "type_code", code)
    return ftype, check_tid(items[2]), _u32(items[3], "boot"), _u32(items[4], "seq")


def ack_ranges(seqs):
    """The ``ranges`` of an ack frame for the ints ``seqs`` (any order, repeats
    allowed): sorted, merged ``[first, count]`` pairs. Split the result into
    chunks of ``MAX_ACK_RANGES`` pairs, one ack frame each."""
    out = []  # type: list
    for s in sorted(set(seqs)):
        if out and out[-1][0] + out[-1][1] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return out


def acked(ranges, seq):
    """True when ``seq`` lies in one of an ack frame's ``[first, count]`` ranges."""
    for first, count in ranges:
        if first <= seq < first + count:
            return True
    return False


def sample_times(frame):
    """Absolute Unix times of a data frame's samples: ts+dt0, +dt1, ..."""
    t = frame["ts"]
    times = []
    for sample in frame["samples"]:
        t += sample["dt"]
        times.append(t)
    return times


# -- scalar checks (same rule both directions, return the value) ---------------


def _isint(v):
    # CPython's bool is an int; MicroPython's is not; treat both the same
    return isinstance(v, int) and not isinstance(v, bool)


def _get(frame, key):
    try:
        return frame[key]
    except KeyError:
        raise ProtocolError("bad_field", "missing", key) from None


def _conv(f):
    """A field converter of the table, importing protocol.cloudfields for a named one.

    A terminal loads its code from .mpy files, each module's bytecode and
    constants onto the heap; the converters it never runs (decoding uplink,
    encoding acks) stay in that module, which it therefore never imports.
    """
    if isinstance(f, str):
        from protocol import cloudfields

        return getattr(cloudfields, f)
    return f


def _spec_has(spec, key):
    for k, _t, _f in spec:
        if k == key:
            return True
    return False


def _bad(what, expected, v, *eargs):
    """``bad_field``: "<what> must be <expected>, got <v>"; ``expected`` is a key
    of protocol.messages.EXPECTED (formatted with ``eargs``) or the text."""
    return ProtocolError("bad_field", "must", what, expected, eargs, v)


def _u32(v, what):
    if not _isint(v) or not 0 <= v <= U32_MAX:
        raise _bad(what, "u32", v)
    return v


def _bool(v, what):
    if v is not True and v is not False:
        raise _bad(what, "a bool", v)
    return v


def _str(v, what, lo, hi):
    if not isinstance(v, str):
        raise _bad(what, "text", v)
    n = len(v)
    if n > hi or n < lo or len(cbor._utf8(v)) > hi:  # chars <= bytes: cheap test first
        raise _bad(what, "utf8_len", v, lo, hi)
    return v


def _name(v, what):
    return _str(v, what, 1, MAX_STR)


def _chunk_len(v, what):
    v = _u32(v, what)
    if not 0 < v <= MAX_CHUNK:
        raise _bad(what, "1..%d", v, MAX_CHUNK)
    return v


def _data(v, what):
    if not isinstance(v, (bytes, bytearray)) or len(v) > MAX_CHUNK:
        raise _bad(what, "bytes_max", v, MAX_CHUNK)
    return bytes(v)


def _opt_text(v, what):
    if v is None:
        return v
    return _str(v, what, 0, MAX_TEXT)


def _number(v, what):
    """A sensor value or threshold: int64 or a finite float."""
    if _isint(v):
        if not INT_MIN <= v <= INT_MAX:
            raise _bad(what, "i64", v)
        return v
    if isinstance(v, float):
        if v - v != 0.0:  # NaN or infinity; JSON and SQL cannot carry them
            raise _bad(what, "finite", v)
        return v
    raise _bad(what, "number", v)


def _opt_number(v, what):
    if v is None:
        return v
    return _number(v, what)


def _alias(v, what):
    if not _isint(v):
        raise _bad(what, "int_alias", v)
    if not 0 <= v < MAX_CHANNELS:
        raise ProtocolError("bad_alias", "alias_rng", what, v, MAX_CHANNELS - 1)
    return v


def _opt_alias(v, what):
    if v is None:
        return v
    return _alias(v, what)


def _level(v, what):
    if not _isint(v) or v not in (WARNING, ALARM):
        raise _bad(what, "level", v)
    return v


def _rssi(v, what):
    if v is None:
        return v
    if not _isint(v) or not RSSI_MIN <= v <= RSSI_MAX:
        raise _bad(what, "rssi", v, RSSI_MIN, RSSI_MAX)
    return v


def _cond(v, what):
    return _str(v, what, 1, MAX_COND)


def _counters(v, what):
    if not isinstance(v, dict):
        raise _bad(what, "a map", v)
    if len(v) > MAX_COUNTERS:
        raise _bad(what, "counters", len(v), MAX_COUNTERS)
    for k, n in v.items():
        _name(k, what + " key")
        _u32(n, what + "[" + k + "]")
    return v


def _tree(v, what, depth):
    """JSON data model: None, bool, int64, finite float, text, list, str-keyed map.

    ``depth`` is the nesting depth a container here would have (the frame
    array is 1), so the same MAX_DEPTH as the CBOR decoder applies.
    """
    if v is None or v is True or v is False:
        return v
    if _isint(v) or isinstance(v, float):
        return _number(v, what)
    if isinstance(v, str):
        return _str(v, what, 0, MAX_TEXT)
    if isinstance(v, (list, tuple)):
        if depth > MAX_DEPTH:
            raise ProtocolError("too_deep", "nests", what, MAX_DEPTH)
        for item in v:
            _tree(item, what, depth + 1)
        return v
    if isinstance(v, dict):
        if depth > MAX_DEPTH:
            raise ProtocolError("too_deep", "nests", what, MAX_DEPTH)
        for k, item in v.items():
            _name(k, what + " key")
            _tree(item, what, depth + 1)
        return v
    raise _bad(what, "tree", type(v).__name__)


def _result(v, what):
    return _tree(v, what, 2)


def _map_tree(v, what):
    if not isinstance(v, dict):
        raise _bad(what, "a map", v)
    return _tree(v, what, 2)


# -- composite fields (differ by direction) ------------------------------------


def _list(v, what):
    if not isinstance(v, (list, tuple)):
        raise _bad(what, "an array", v)
    return v


_CHANNEL_KEYS = ("alias", "name", "unit", "kind", "exp")


def _channel(alias, name, unit, kind, exp):
    # field names and expectations are keys of protocol.messages (WHAT, EXPECTED)
    _alias(alias, "ch_alias")
    _name(name, "ch_name")
    _str(unit, "ch_unit", 0, MAX_STR)
    if not isinstance(kind, str) or kind not in KINDS:
        raise _bad("ch_kind", "one_of", kind, " ".join(KINDS))
    if not _isint(exp) or not -MAX_EXP <= exp <= MAX_EXP:
        raise _bad("ch_exp", "int_range", exp, -MAX_EXP, MAX_EXP)


def _channels_check(rows, what):
    """Limits shared by both directions; rows are (alias, name, ...) sequences."""
    aliases = []
    names = []
    for row in rows:
        _channel(*row)
        if row[0] in aliases:
            raise ProtocolError("bad_alias", "alias_two", what, row[0])
        if row[1] in names:
            raise _bad(what, "uniq_chan", row[1])
        aliases.append(row[0])
        names.append(row[1])


def _channels_count(v, what):
    _list(v, what)
    if len(v) > MAX_CHANNELS:
        raise ProtocolError("too_many_channels", "channels", len(v), MAX_CHANNELS)


def _channels_to(v, what):
    _channels_count(v, what)
    rows = []
    for ch in v:
        if not isinstance(ch, dict) or len(ch) != len(_CHANNEL_KEYS):
            raise _bad(what, "map_keys", ch, " ".join(_CHANNEL_KEYS))
        rows.append([_get(ch, k) for k in _CHANNEL_KEYS])
    _channels_check(rows, what)
    return rows


_DEVICE_KEYS = ("name", "model", "status")


def _devices_check(rows, what):
    """0..MAX_CHANNELS ``(name, model, status)`` rows, names unique."""
    if len(rows) > MAX_CHANNELS:
        raise _bad(what, "devices", len(rows), MAX_CHANNELS)
    names = []
    for name, model, status in rows:
        _name(name, "dev_name")
        _name(model, "dev_model")
        _str(status, "dev_status", 1, MAX_COND)
        if name in names:
            raise _bad(what, "uniq_dev", name)
        names.append(name)


def _devices_to(v, what):
    _list(v, what)
    rows = []
    for d in v:
        if not isinstance(d, dict) or len(d) != len(_DEVICE_KEYS):
            raise _bad(what, "map_keys", d, " ".join(_DEVICE_KEYS))
        rows.append([_get(d, k) for k in _DEVICE_KEYS])
    _devices_check(rows, what)
    return rows


def _ranges_check(pairs, what):
    """``[first, count]`` pairs: 1..MAX_ACK_RANGES of them, each inside
    0..2**32-1, sorted, disjoint and not touching (one run is one range)."""
    if not pairs:
        raise _bad(what, "one_range", pairs)
    if len(pairs) > MAX_ACK_RANGES:
        raise _bad(what, "ranges", len(pairs), MAX_ACK_RANGES)
    lowest = 0  # the smallest first the next range may have
    for first, count in pairs:
        _u32(first, "rng_first")
        if not _isint(count) or count < 1 or first + count - 1 > U32_MAX:
            raise _bad("rng_count", "count", count)
        if first < lowest:
            raise _bad(what, "disjoint", first)
        lowest = first + count + 1


def _ranges_from(v, what):
    flat = _list(v, what)
    if len(flat) % 2:
        raise _bad(what, "pairs", flat)
    pairs = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
    _ranges_check(pairs, what)
    return pairs


def _state_to(v, what):
    if v == "raised" and isinstance(v, str):
        return 1
    if v == "cleared" and isinstance(v, str):
        return 0
    raise _bad(what, "state", v)


# (key, dict->wire, wire->dict) in wire order; key order is the dict API.
# A converter given by name is one of protocol.cloudfields: the directions a
# terminal never takes (see _conv).
_SPECS = {
    "birth": (
        ("fw", _name, _name),
        ("cfg", _u32, _u32),
        ("channels", _channels_to, "channels_from"),
    ),
    "data": (("samples", "samples_to", "samples_from"),),
    "alarm": (
        ("alias", _opt_alias, _opt_alias),
        ("cond", _cond, _cond),
        ("level", _level, _level),
        ("state", _state_to, "state_from"),
        ("value", _opt_number, _opt_number),
        ("threshold", _opt_number, _opt_number),
    ),
    "status": (
        ("uptime", _u32, _u32),
        ("queued", _u32, _u32),
        ("dropped", _u32, _u32),
        ("rssi", _rssi, _rssi),
        ("heap", _u32, _u32),
        ("errors", _counters, _counters),
    ),
    "cfgack": (
        ("version", _u32, _u32),
        ("ok", _bool, _bool),
        ("reason", _opt_text, _opt_text),
    ),
    "cmdres": (
        ("id", _u32, _u32),
        ("ok", _bool, _bool),
        ("result", _result, _result),
    ),
    "death": (),
    "otareq": (
        ("job", _u32, _u32),
        ("path", _name, _name),
        ("off", _u32, _u32),
        ("len", _chunk_len, _chunk_len),
    ),
    "otastat": (
        ("job", _u32, _u32),
        ("state", _name, _name),
        ("done", _u32, _u32),
        ("total", _u32, _u32),
        ("reason", _opt_text, _opt_text),
    ),
    "config": (
        ("version", _u32, _u32),
        ("config", _map_tree, _map_tree),
    ),
    "cmd": (
        ("id", _u32, _u32),
        ("name", _name, _name),
        ("args", _map_tree, _map_tree),
    ),
    "ack": (
        ("for_boot", _u32, _u32),
        ("ranges", "ranges_to", _ranges_from),
    ),
    "chunk": (
        ("job", _u32, _u32),
        ("path", _name, _name),
        ("off", _u32, _u32),
        ("size", _u32, _u32),
        ("data", _data, _data),
    ),
}

# The one optional trailing field a type may have: (key, dict->wire, wire->dict).
# birth ``devices``: which sensor profile each wired device is polled with
# (README section 5); terminals before it omit it.
_OPTIONAL = {"birth": ("devices", _devices_to, "devices_from")}
