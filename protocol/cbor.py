"""Minimal deterministic CBOR (RFC 8949) for frames; runs on MicroPython.

Only the data model frames use: unsigned and negative integers up to 64
bits, floats (half, single, double), text and byte strings, arrays, maps,
``true``/``false``/``null``.  Pure: bytes in, values out, no I/O.

Encoding is deterministic and byte-identical to
``cbor2.dumps(obj, canonical=True)``:

* integers and lengths in the shortest head;
* a float as the shortest of half/single/double that holds it exactly
  (NaN as ``f9 7e00``, infinities as half);
* map keys sorted by their encoded bytes, shorter encodings first
  ("length-first", RFC 7049 canonical; this is what cbor2 does).  For text
  keys, the only keys frames use, this equals the bytewise order of RFC 8949
  deterministic encoding, because the length sits in the first byte; the two
  differ only for mixed key types (``"a"`` sorts before ``1000`` here).

Decoding accepts one definite-length data item and rejects, with
:class:`~protocol.errors.ProtocolError`:

* ``truncated``: input ends inside an item, or a length claims more bytes
  than remain (checked before anything is allocated, so a hostile length
  cannot make it allocate);
* ``unsupported_cbor``: indefinite lengths, tags, simple values and
  ``undefined``, reserved headers (additional info 28..30), a lone break,
  map keys other than int/text/bytes;
* ``bad_utf8``: text strings that are not strict UTF-8 (no overlongs,
  surrogates or code points above U+10FFFF, on MicroPython too);
* ``duplicate_key``; ``too_deep``: more than ``MAX_DEPTH`` nested containers;
* ``trailing_bytes`` (``loads`` only).

Deliberately liberal: integers, lengths and floats in a longer head than
needed, and map keys in any order, are accepted (other languages' CBOR
libraries do not all emit the shortest form).  They decode to the same value;
re-encoding then gives the canonical bytes.
"""

import math
import struct

from protocol.errors import ProtocolError
from protocol.limits import MAX_DEPTH

_U64_LIMIT = 0x10000000000000000
_INF = float("inf")


# -- encoder -----------------------------------------------------------------


def dumps(obj):
    """Encode ``obj`` to canonical CBOR bytes.

    Accepts None, bool, int (-2**64 .. 2**64-1), float, str, bytes,
    bytearray, list, tuple and dict (keys int, str or bytes).  Raises
    ProtocolError ``unsupported_cbor`` for anything else, ``too_deep`` for
    more than MAX_DEPTH nested containers, ``bad_utf8`` for a str that is not
    encodable (lone surrogates on CPython).
    """
    out = bytearray()
    _enc(obj, out, 0)
    return bytes(out)


def _head(out, major, n):
    """Append the shortest head for major type ``major`` and argument ``n``."""
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n < _U64_LIMIT:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise ProtocolError("unsupported_cbor", "big_int")


def _enc(obj, out, depth):
    # bool before int: on CPython bool is an int subclass (not on MicroPython)
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(out, 0, obj)
        else:
            _head(out, 1, -1 - obj)
    elif isinstance(obj, str):
        b = _utf8(obj)
        _head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, float):
        _enc_float(obj, out)
    elif isinstance(obj, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise ProtocolError("too_deep", "nest", MAX_DEPTH)
        _head(out, 4, len(obj))
        for item in obj:
            _enc(item, out, depth + 1)
    elif isinstance(obj, dict):
        if depth >= MAX_DEPTH:
            raise ProtocolError("too_deep", "nest", MAX_DEPTH)
        pairs = []
        for k, v in obj.items():
            if k is True or k is False or not isinstance(k, (int, str, bytes)):
                raise ProtocolError("unsupported_cbor", "key_type")
            kb = bytearray()
            _enc(k, kb, depth + 1)
            pairs.append((len(kb), bytes(kb), v))
        pairs.sort(key=_pair_key)
        _head(out, 5, len(pairs))
        for _n, key_bytes, v in pairs:
            out.extend(key_bytes)
            _enc(v, out, depth + 1)
    else:
        raise ProtocolError("unsupported_cbor", "no_encode", type(obj).__name__)


def _pair_key(p):
    # length-first, then bytewise: cbor2's canonical order (values never compared)
    return (p[0], p[1])


def _utf8(s):
    # no "raise ... from err" in device code: MicroPython prints a warning for it
    b = None
    try:
        b = s.encode("utf-8")
    except UnicodeError:
        pass  # lone surrogates, CPython only
    if b is None:
        raise ProtocolError("bad_utf8", "enc_utf8")
    return b


def _enc_float(x, out):
    """Append ``x`` as the shortest exact float (cbor2 canonical)."""
    if math.isnan(x):
        out.extend(b"\xf9\x7e\x00")
        return
    if x == _INF:
        out.extend(b"\xf9\x7c\x00")
        return
    if x == -_INF:
        out.extend(b"\xf9\xfc\x00")
        return
    d = struct.pack(">d", x)
    bits = int.from_bytes(d, "big")
    sign = bits >> 63
    e = (bits >> 52) & 0x7FF
    m = bits & 0xFFFFFFFFFFFFF
    if e == 0:
        if m == 0:  # +-0.0
            out.append(0xF9)
            out.append(0x80 if sign else 0)
            out.append(0)
            return
        # a double subnormal is below every single/half magnitude
        out.append(0xFB)
        out.extend(d)
        return
    e -= 1023
    sig = m | 0x10000000000000
    # half precision, done with integers: struct 'e' is optional on MicroPython
    if -24 <= e <= 15:
        h = -1
        if e >= -14:
            if m & 0x3FFFFFFFFFF == 0:  # low 42 of 52 mantissa bits unused
                h = ((e + 15) << 10) | (m >> 42)
        else:
            shift = 28 - e  # half subnormal: value = frac * 2**-24
            if sig & ((1 << shift) - 1) == 0:
                h = sig >> shift
        if h >= 0:
            h |= sign << 15
            out.append(0xF9)
            out.append(h >> 8)
            out.append(h & 0xFF)
            return
    if -149 <= e <= 127:
        if e >= -126:
            exact = m & 0x1FFFFFFF == 0  # low 29 of 52 mantissa bits unused
        else:
            exact = sig & ((1 << (-97 - e)) - 1) == 0  # single subnormal: frac * 2**-149
        if exact:
            out.append(0xFA)
            out.extend(struct.pack(">f", x))
            return
    out.append(0xFB)
    out.extend(d)


# -- decoder -----------------------------------------------------------------


def loads(buf):
    """Decode exactly one CBOR item that fills ``buf``.

    Raises ProtocolError ``trailing_bytes`` when bytes are left over, and
    every error :func:`decode` raises.
    """
    value, end = decode(buf, 0)
    if end != len(buf):
        raise ProtocolError("trailing_bytes", "trailing", len(buf) - end, end)
    return value


def decode(buf, offset=0):
    """Decode one CBOR item of ``buf`` starting at ``offset``.

    Returns ``(value, new_offset)``; ``new_offset - offset`` is how many
    bytes the item used.  ``buf`` is bytes, bytearray or memoryview.
    Arrays decode to lists, maps to dicts, byte strings to bytes.
    Failures: see the module docstring.
    """
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise ProtocolError("unsupported_cbor", "input")
    return _item(buf, offset, len(buf), 0)


def _truncated(pos, need, end):
    return ProtocolError("truncated", "truncated", pos, need, end - pos)


def _item(buf, pos, end, depth):
    if pos >= end:
        raise _truncated(pos, 1, end)
    start = pos
    ib = buf[pos]
    pos += 1
    major = ib >> 5
    ai = ib & 0x1F
    if major == 7:
        return _simple(buf, pos, end, ai, start)
    if ai < 24:
        arg = ai
    elif ai < 28:
        n = 1 << (ai - 24)  # 1, 2, 4 or 8 bytes follow
        if end - pos < n:
            raise _truncated(start, 1 + n, end)
        arg = int.from_bytes(bytes(buf[pos : pos + n]), "big")
        pos += n
    elif ai == 31:
        raise ProtocolError("unsupported_cbor", "indef", start)
    else:
        raise ProtocolError("unsupported_cbor", "reserved", ib, start)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if arg > end - pos:
            raise _truncated(start, arg, end)
        raw = bytes(buf[pos : pos + arg])
        pos += arg
        if major == 2:
            return raw, pos
        return _text(raw, start), pos
    if major == 6:
        raise ProtocolError("unsupported_cbor", "tag", arg, start)
    if depth >= MAX_DEPTH:
        raise ProtocolError("too_deep", "nest_at", MAX_DEPTH, start)
    depth += 1
    if major == 4:
        # every item takes at least one byte: refuse impossible counts before allocating
        if arg > end - pos:
            raise _truncated(start, arg, end)
        items = []
        for _ in range(arg):
            value, pos = _item(buf, pos, end, depth)
            items.append(value)
        return items, pos
    # major == 5, a map: every pair takes at least two bytes
    if arg > (end - pos) // 2:
        raise _truncated(start, 2 * arg, end)
    result = {}
    for _ in range(arg):
        kpos = pos
        key, pos = _item(buf, pos, end, depth)
        if key is True or key is False or not isinstance(key, (int, str, bytes)):
            raise ProtocolError("unsupported_cbor", "key_at", kpos)
        if key in result:
            raise ProtocolError("duplicate_key", "dup_key", key, kpos)
        value, pos = _item(buf, pos, end, depth)
        result[key] = value
    return result, pos


def _simple(buf, pos, end, ai, start):
    if ai == 20:
        return False, pos
    if ai == 21:
        return True, pos
    if ai == 22:
        return None, pos
    if 25 <= ai <= 27:
        n = 1 << (ai - 24)
        if end - pos < n:
            raise _truncated(start, 1 + n, end)
        raw = bytes(buf[pos : pos + n])
        if n == 2:
            value = _half(raw[0] << 8 | raw[1])
        elif n == 4:
            value = struct.unpack(">f", raw)[0]
        else:
            value = struct.unpack(">d", raw)[0]
        return value, pos + n
    if ai == 31:
        raise ProtocolError("unsupported_cbor", "break", start)
    if ai == 23:
        raise ProtocolError("unsupported_cbor", "undefined", start)
    raise ProtocolError("unsupported_cbor", "simple", start)


def _half(h):
    """IEEE 754 binary16 bits to float, without struct 'e'."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = math.ldexp(m, -24)
    elif e == 31:
        v = _INF if m == 0 else float("nan")
    else:
        v = math.ldexp(m | 0x400, e - 25)
    return -v if h & 0x8000 else v


def _text(raw, start):
    """Strict UTF-8 to str; MicroPython's own decoder lets overlongs through."""
    s = None
    try:
        s = str(raw, "utf-8")
    except UnicodeError:
        pass
    if s is None:
        raise ProtocolError("bad_utf8", "utf8", start)
    if len(s) != len(raw) and not _strict_utf8(raw):
        # only non-ASCII text gets here (one char per byte means all ASCII)
        raise ProtocolError("bad_utf8", "utf8_strct", start)
    return s


def _strict_utf8(b):
    """True when ``b`` is well-formed UTF-8 per RFC 3629 (table 3-7 of Unicode)."""
    i = 0
    n = len(b)
    while i < n:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k, lo, hi = 1, 0x80, 0xBF
        elif c == 0xE0:
            k, lo, hi = 2, 0xA0, 0xBF  # no overlongs
        elif c == 0xED:
            k, lo, hi = 2, 0x80, 0x9F  # no surrogates
        elif 0xE1 <= c <= 0xEF:
            k, lo, hi = 2, 0x80, 0xBF
        elif c == 0xF0:
            k, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= c <= 0xF3:
            k, lo, hi = 3, 0x80, 0xBF
        elif c == 0xF4:
            k, lo, hi = 3, 0x80, 0x8F  # nothing above U+10FFFF
        else:
            return False
        if i + k >= n:
            return False
        if not lo <= b[i + 1] <= hi:
            return False
        for j in range(i + 2, i + 1 + k):
            if not 0x80 <= b[j] <= 0xBF:
                return False
        i += 1 + k
    return True
