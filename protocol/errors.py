"""The one error type of the protocol layer.

Every failure to build, encode, decode or route a frame raises
:class:`ProtocolError`; nothing else escapes the decoder, whatever the input
bytes.  ``reason`` is a short, stable snake_case code that tests, logs and
metrics can key on; the message is for humans and may change.

Reasons (see ``protocol/README.md`` for when each applies):

=================== ====================================================
``truncated``       input ends inside an item, or a length field claims
                    more bytes than are left
``trailing_bytes``  bytes left after the frame's single CBOR item
``too_large``       frame longer than ``limits.MAX_FRAME_BYTES``
``unsupported_cbor`` indefinite length, tag, simple/undefined value,
                    reserved header, int beyond 64 bits, odd map key type
``bad_utf8``        text string that is not strict UTF-8
``duplicate_key``   the same key twice in one map
``too_deep``        containers nested deeper than ``limits.MAX_DEPTH``
``bad_version``     protocol version other than ``limits.VERSION``
``bad_type``        unknown frame type / type code
``bad_tid``         terminal id not 1..32 of ``[A-Za-z0-9_-]``
``bad_field``       a field is missing, extra, of the wrong type or out
                    of range
``bad_alias``       channel alias out of range, duplicated, or quality
                    aliases not strictly increasing
``too_many_channels`` more channels (birth) or values (data) than
                    ``limits.MAX_CHANNELS``
``too_many_samples`` more samples than ``limits.MAX_SAMPLES``
``bad_topic``       topic not in the scheme, or kind does not match frame
``tid_mismatch``    topic terminal id differs from the frame's
=================== ====================================================
"""

REASONS = (
    "truncated",
    "trailing_bytes",
    "too_large",
    "unsupported_cbor",
    "bad_utf8",
    "duplicate_key",
    "too_deep",
    "bad_version",
    "bad_type",
    "bad_tid",
    "bad_field",
    "bad_alias",
    "too_many_channels",
    "too_many_samples",
    "bad_topic",
    "tid_mismatch",
)


class ProtocolError(ValueError):
    """A frame or topic violates the protocol.

    ``reason`` is one of :data:`REASONS`; ``message`` says what and where.
    Subclasses ``ValueError`` so generic input-validation handlers catch it.

    ``message`` may be a key of ``protocol.messages.TEXTS`` with ``args``
    for its placeholders (what this package raises: the texts stay off a
    terminal's heap until one is shown), or the text itself. The text is
    made each time ``message`` or ``str(err)`` is read, from ``args`` as
    they are then.
    """

    def __init__(self, reason, message="", *args):
        super().__init__(reason)
        self.reason = reason
        self._key = message
        self._args = args

    @property
    def message(self):
        if not self._args and not self._key:
            return ""
        from protocol.messages import render

        return render(self._key, self._args)

    def __str__(self):
        message = self.message
        return self.reason + ": " + message if message else self.reason

    def __repr__(self):
        return "ProtocolError(%r)" % (str(self),)


class ConfigError(Exception):
    """A configuration document is invalid (``protocol.config``).

    The message is ``<path>: <problem>`` and names keys and limits, never a
    secret. The terminal raises the same class for its own settings
    (``edge.errors`` re-exports it). Not a ValueError, as on the terminal:
    MicroPython cannot derive one class from two built-in exception types.
    """
