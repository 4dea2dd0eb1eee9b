"""mimamori wire protocol: topics, CBOR frames, limits, one error type.

Pure Python in the subset MicroPython runs; no I/O, no state.  The terminal
and the cloud import the same code.  Specification: ``protocol/README.md``.

    from protocol import frames, topics, ProtocolError
    payload = frames.encode(frame)          # dict -> bytes
    frame = frames.decode(payload)          # bytes -> dict, or ProtocolError
"""

from protocol import cbor, frames, limits, topics
from protocol.errors import REASONS, ProtocolError
from protocol.frames import decode, encode, from_obj, sample_times, to_obj
from protocol.limits import VERSION

__all__ = [
    "REASONS",
    "VERSION",
    "ProtocolError",
    "cbor",
    "decode",
    "encode",
    "frames",
    "from_obj",
    "limits",
    "sample_times",
    "to_obj",
    "topics",
]
