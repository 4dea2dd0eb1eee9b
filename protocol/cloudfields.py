"""Frame fields in the directions a terminal never takes.

The cloud decodes what terminals send (birth channels, data samples, the
alarm state) and encodes the ack frame's ranges; a terminal encodes those
frames and decodes the downlink. :mod:`protocol.frames` names these
converters in its field table and imports this module on first use, so a
terminal, which loads its code from ``.mpy`` files onto a small heap, never
holds them (docs/agent.md, "Memory"). Same contract as the rest of
:mod:`protocol.frames`: each converter returns the value in the other form
or raises :class:`~protocol.errors.ProtocolError`.
"""

from protocol.errors import ProtocolError
from protocol.frames import (
    _CHANNEL_KEYS,
    _DEVICE_KEYS,
    QUALITY_NAMES,
    _alias,
    _bad,
    _channels_check,
    _channels_count,
    _devices_check,
    _get,
    _isint,
    _list,
    _opt_number,
    _ranges_check,
)
from protocol.limits import MAX_CHANNELS, MAX_SAMPLES, U32_MAX


def _samples_count(v, what):
    _list(v, what)
    if not v:
        raise _bad(what, "at least one sample", v)
    if len(v) > MAX_SAMPLES:
        raise ProtocolError("too_many_samples", "%d samples, limit %d" % (len(v), MAX_SAMPLES))


def _dt(v, first):
    # sample times strictly increase, so (tid, channel, time) stays a unique key
    lo = 0 if first else 1
    if not _isint(v) or not lo <= v <= U32_MAX:
        raise _bad("dt", "an int %d..2**32-1" % lo, v)
    return v


def _values(v):
    _list(v, "values")
    if len(v) > MAX_CHANNELS:
        raise ProtocolError("too_many_channels", "%d values, limit %d" % (len(v), MAX_CHANNELS))
    for x in v:
        _opt_number(x, "value")


def _quality_pairs(pairs):
    """Check (alias, code) pairs: aliases strictly increasing, codes 1..3."""
    if not pairs:
        raise _bad("quality", "non-empty (omit it when all values are good)", pairs)
    last = -1
    for alias, code in pairs:
        _alias(alias, "quality alias")
        if alias <= last:
            raise ProtocolError("bad_alias", "quality aliases must strictly increase")
        last = alias
        if not _isint(code) or code not in QUALITY_NAMES:
            raise _bad("quality code", "1, 2 or 3", code)


def samples_to(v, what):
    _samples_count(v, what)
    wire = []
    first = True
    for s in v:
        if not isinstance(s, dict):
            raise _bad(what, "maps with keys dt, values[, quality]", s)
        for k in s:
            if k not in ("dt", "values", "quality"):
                raise _bad("sample", "keys dt, values[, quality]", k)
        dt = _dt(_get(s, "dt"), first)
        first = False
        values = _get(s, "values")
        _values(values)
        n = len(values)
        while n and values[n - 1] is None:
            n -= 1  # trailing Nones are implied by a shorter array
        row = [dt, list(values[:n])]
        if "quality" in s:
            pairs = _list(s["quality"], "quality")
            for p in pairs:
                if not isinstance(p, (list, tuple)) or len(p) != 2:
                    raise _bad("quality", "[alias, code] pairs", p)
            _quality_pairs(pairs)
            flat = []
            for alias, code in pairs:
                flat.append(alias)
                flat.append(code)
            row.append(flat)
        wire.append(row)
    return wire


def samples_from(v, what):
    _samples_count(v, what)
    out = []
    first = True
    for row in v:
        if not isinstance(row, (list, tuple)) or not 2 <= len(row) <= 3:
            raise _bad(what, "arrays [dt, values] or [dt, values, quality]", row)
        dt = _dt(row[0], first)
        first = False
        _values(row[1])
        sample = {"dt": dt, "values": list(row[1])}
        if len(row) == 3:
            flat = _list(row[2], "quality")
            if len(flat) % 2:
                raise _bad("quality", "alias, code pairs", flat)
            pairs = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
            _quality_pairs(pairs)
            sample["quality"] = pairs
        out.append(sample)
    return out


def channels_from(v, what):
    _channels_count(v, what)
    for row in v:
        if not isinstance(row, (list, tuple)) or len(row) != len(_CHANNEL_KEYS):
            raise _bad(what, "arrays [alias, name, unit, kind, exp]", row)
    _channels_check(v, what)
    return [{"alias": r[0], "name": r[1], "unit": r[2], "kind": r[3], "exp": r[4]} for r in v]


def devices_from(v, what):
    _list(v, what)
    for row in v:
        if not isinstance(row, (list, tuple)) or len(row) != len(_DEVICE_KEYS):
            raise _bad(what, "arrays [name, model, status]", row)
    _devices_check(v, what)
    return [{"name": r[0], "model": r[1], "status": r[2]} for r in v]


def ranges_to(v, what):
    _list(v, what)
    for p in v:
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise _bad(what, "[first, count] pairs", p)
    _ranges_check(v, what)
    flat = []
    for first, count in v:
        flat.append(first)
        flat.append(count)
    return flat


def state_from(v, what):
    if _isint(v) and v in (0, 1):
        return "raised" if v else "cleared"
    raise _bad(what, "1 (raised) or 0 (cleared)", v)
