"""A data frame built one sample at a time: the terminal's encoder.

:func:`protocol.frames.encode` takes a whole frame dict, so every sample
of a batch would sit in RAM as lists until the frame is sent. A terminal
instead encodes each sample when it is taken (:func:`sample`, about 19
bytes for six channels), appends the bytes to a body, and wraps the body
in the frame's head when the batch closes (:func:`frame`)::

    [1, 2, tid, boot, seq, ts, flags, [sample, sample, ...]]
    88 01 02 <tid> <boot> <seq> <ts> <flags> 80+n|98 n <samples...>

The bytes equal what ``frames.encode`` gives for the same frame (the golden
data vectors check it, on CPython and on MicroPython). Nothing is validated
here: the caller keeps its samples within the protocol's limits
(:data:`BODY_LIMIT` bytes, ``limits.MAX_SAMPLES`` samples, ``dt >= 1``
after the first) and passes values ``frames.encode`` would accept.
"""

from protocol import cbor
from protocol.limits import MAX_FRAME_BYTES, VERSION

DATA = 2  # frames.TYPECODES["data"]
# Room for the data frame's head: tid up to 32 bytes, five uints, two array heads.
BODY_LIMIT = MAX_FRAME_BYTES - 64


def sample(dt, values, quality=None):
    """CBOR bytes of one sample: ``[dt, values]``, or ``[dt, values, quality]``
    when ``quality`` (flat ``[alias, code, alias, code...]``) is not empty.

    Trailing None values must already be dropped from ``values``.
    """
    return cbor.dumps([dt, values, quality] if quality else [dt, values])


def frame(tid, boot, seq, ts, flags, count, body):  # noqa: PLR0917 (the head in wire order)
    """The data frame's bytes: the head, then ``count`` samples already
    encoded by :func:`sample` and concatenated in ``body``."""
    out = bytearray(cbor.dumps([VERSION, DATA, tid, boot, seq, ts, flags]))
    out[0] = 0x88  # the head's array of 7 gets an 8th element: the samples
    if count < 24:
        out.append(0x80 | count)
    else:
        out.append(0x98)  # array, one-byte length (count <= MAX_SAMPLES = 240)
        out.append(count)
    out.extend(body)
    return out
