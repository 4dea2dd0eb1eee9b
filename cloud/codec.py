"""The cloud's frame decoder: cbor2 for the bytes, ``protocol`` for the rules.

``decode_frame`` accepts exactly what the terminal-side ``protocol.frames.decode``
accepts (the tests hold both to the same verdict on every golden vector and on
fuzzed input) but runs at cbor2's C speed. Every failure is a
``protocol.errors.ProtocolError`` with a stable ``reason``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import cbor2

from protocol import frames
from protocol.errors import ProtocolError
from protocol.limits import MAX_DEPTH, MAX_FRAME_BYTES


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
    return frames.from_obj(strict_cbor2_loads(buf))
