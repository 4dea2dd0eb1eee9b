"""mimamori wire protocol: topics, CBOR frames, limits, one error type.

Pure Python in the subset MicroPython runs; no I/O, no state.  The terminal
and the cloud import the same code.  Specification: ``protocol/README.md``.

    from protocol import frames, topics
    from protocol.errors import ProtocolError
    payload = frames.encode(frame)          # dict -> bytes
    frame = frames.decode(payload)          # bytes -> dict, or ProtocolError

The package imports none of its modules: a terminal loads from ``.mpy``
files, where every imported module's code stays on the heap, so each caller
imports the modules it uses (docs/agent.md, "Memory").
"""
