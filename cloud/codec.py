"""The cloud's frame decoder: cbor2 for the bytes, ``protocol`` for the rules.

``decode_frame`` accepts exactly what the terminal-side ``protocol.frames.decode``
accepts (the tests hold both to the same verdict on every golden vector and on
fuzzed input) but runs at cbor2's C speed. Every failure is a
``protocol.errors.ProtocolError`` with a stable ``reason``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from protocol import frames
from protocol.errors import ProtocolError
from protocol.limits import (
    INT_MAX,
    INT_MIN,
    MAX_CHANNELS,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    MAX_SAMPLES,
    MAX_TID,
    U32_MAX,
)


def _reject_tag(*_args: object) -> NoReturn:
    raise ValueError("tags are not part of the protocol")


class _EveryTag(Mapping[int, Any]):
    """cbor2 semantic-decoder table that claims every tag and refuses it.

    cbor2 would otherwise turn tag 2 into an int or tag 55799 into its
    content, and a tagged frame would pass on the cloud but not the device.
    """

    def __getitem__(self, tag: int) -> Any:
        return _reject_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


def strict_cbor2_loads(buf: bytes) -> Any:
    """cbor2 configured to accept exactly what ``protocol.cbor.loads`` accepts.

    Size limit, no indefinite lengths, no duplicate keys, MAX_DEPTH, no tags,
    no trailing bytes.  Errors become ProtocolError (``truncated`` for a
    short input, ``unsupported_cbor`` for the rest); simple values and
    ``undefined`` come back as cbor2 objects that ``from_obj`` refuses.
    """
    if len(buf) > MAX_FRAME_BYTES:
        raise ProtocolError("too_large", "payload is %d bytes" % len(buf))
    fp = io.BytesIO(buf)
    decoder = cbor2.CBORDecoder(
        fp,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        max_depth=MAX_DEPTH,
        semantic_decoders=_EveryTag(),
        tag_hook=_reject_tag,
    )
    try:
        obj = decoder.decode()
    except cbor2.CBORDecodeEOF as err:
        raise ProtocolError("truncated", str(err)) from err
    except cbor2.CBORDecodeError as err:
        raise ProtocolError("unsupported_cbor", str(err)) from err
    if fp.tell() != len(buf):
        raise ProtocolError("trailing_bytes", "%d byte(s) left" % (len(buf) - fp.tell()))
    return obj


def decode_frame(buf: bytes) -> dict[str, Any]:
    """Decode a frame the way the cloud does: cbor2 bytes, protocol validation."""
    obj = strict_cbor2_loads(buf)
    return _plain_data_frame(obj) or frames.from_obj(obj)


_DATA = frames.TYPECODES["data"]
_TID = re.compile("[A-Za-z0-9_-]{1,%d}" % MAX_TID)


def _plain_data_frame(obj: Any) -> dict[str, Any] | None:
    """``frames.from_obj(obj)`` for a data frame without quality codes, the
    bulk of the traffic, at a third of the cost; None for anything else, valid
    or not, which ``from_obj`` then decides (with its precise error).

    Accepts a strict subset of what ``from_obj`` accepts and returns the same
    dict for it: the protocol fuzz and vector tests hold ``decode_frame`` to
    the device decoder's verdict on every input.
    """
    if type(obj) is not list or len(obj) != 8:
        return None
    version, code, tid, boot, seq, ts, flags, rows = obj
    if (
        type(version) is not int
        or version != frames.VERSION
        or type(code) is not int
        or code != _DATA
        or type(tid) is not str
        or _TID.fullmatch(tid) is None
        or type(boot) is not int
        or type(seq) is not int
        or type(ts) is not int
        or type(flags) is not int
        or not (0 <= boot <= U32_MAX and 0 <= seq <= U32_MAX)
        or not (0 <= ts <= U32_MAX and 0 <= flags <= U32_MAX)
        or type(rows) is not list
        or not 0 < len(rows) <= MAX_SAMPLES
    ):
        return None
    samples = []
    lowest_dt = 0  # then 1: sample times strictly increase
    for row in rows:
        if type(row) is not list or len(row) != 2:
            return None
        dt, values = row
        if (
            type(dt) is not int
            or not lowest_dt <= dt <= U32_MAX
            or type(values) is not list
            or len(values) > MAX_CHANNELS
        ):
            return None
        lowest_dt = 1
        for v in values:
            kind = type(v)
            if kind is float:
                if v - v != 0.0:  # NaN or infinity
                    return None
            elif kind is int:
                if not INT_MIN <= v <= INT_MAX:
                    return None
            elif v is not None:
                return None
        samples.append({"dt": dt, "values": values})
    return {
        "type": "data",
        "tid": tid,
        "boot": boot,
        "seq": seq,
        "ts": ts,
        "unsynced": bool(flags & 1),  # flag bit 0; from_obj ignores the others too
        "samples": samples,
    }
