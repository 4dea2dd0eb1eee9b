"""The text of every ProtocolError message, loaded only when one is shown.

The modules that check frames (``protocol.cbor``, ``protocol.frames``,
``protocol.topics``) raise ``ProtocolError(reason, key, *args)`` with a
short key instead of the text; :attr:`ProtocolError.message` (and
``str(err)``) looks the key up here and formats it with the arguments. A
terminal loads its code from ``.mpy`` files, which copy every string
constant longer than 10 characters to the heap; the messages live in this
module, which a terminal imports only when it logs an error (and then
unloads: ``edge.agent``), instead of in modules it keeps loaded. Every key
is at most 10 characters, so it is a qstr in those modules, not a heap
string (``tests/unit/test_protocol_frames.py`` checks). The cloud sees the
same messages as before.

A key that is not in :data:`TEXTS` is the message itself (the cloud's own
raisers write theirs out).
"""

# key -> message; "%" placeholders take the raiser's arguments in order
TEXTS = {
    # protocol.cbor
    "big_int": "integer needs more than 64 bits",
    "nest": "more than %d nested containers",
    "key_type": "map key must be int, str or bytes",
    "no_encode": "cannot encode %s",
    "enc_utf8": "text is not encodable as UTF-8",
    "trailing": "%d byte(s) after the item at offset %d",
    "input": "input must be bytes",
    "truncated": "item at offset %d needs %d byte(s), %d left",
    "indef": "indefinite length at offset %d",
    "reserved": "reserved header 0x%02x at offset %d",
    "tag": "tag %d at offset %d",
    "nest_at": "more than %d nested containers at offset %d",
    "key_at": "map key at offset %d is not int, text or bytes",
    "dup_key": "key %r repeated at offset %d",
    "break": "stray break code at offset %d",
    "undefined": "undefined at offset %d",
    "simple": "simple value at offset %d",
    "utf8": "text at offset %d is not UTF-8",
    "utf8_strct": "text at offset %d is not strict UTF-8",
    # protocol.frames
    "frame_len": "frame is %d bytes, limit %d",
    "payload": "payload must be bytes",
    "pay_len": "payload is %d bytes, limit %d",
    "not_dict": "frame must be a dict",
    "type_name": "unknown frame type %r",
    "extra_key": "%s frame has no key %r",
    "not_array": "a frame is a non-empty CBOR array",
    "version": "version %r, expected %d",
    "type_code": "unknown type code %r",
    "elements": "%s frame has %d elements, expected %d%s",
    "tid_len": "terminal id must be 1..%d characters",
    "tid_char": "terminal id %r has character %r",
    "empty": "empty payload",
    "head_arr": "a frame is a definite-length CBOR array",
    "head_cut": "array head cut short",
    "head_min": "a frame has at least %d elements",
    "missing": "missing key %r",
    "must": "%s must be %s, got %r",  # what, EXPECTED key, its arguments, value
    "alias_rng": "%s %r is not 0..%d",
    "alias_two": "%s: alias %d used twice",
    "channels": "%d channels, limit %d",
    "nests": "%s nests deeper than %d",
    # protocol.topics
    "up_kind": "unknown uplink kind %r",
    "down_kind": "unknown downlink kind %r",
    "share": "share group must be non-empty, without / + #",
    "topic_str": "topic must be a string",
    "scheme": "%r is not %s/<tid>/<up|down>/<kind>",
    "topic_tid": "%r: malformed terminal id",
    "direction": "%r: direction must be up or down",
    "topic_kind": "%r: unknown %s kind %r",
    "frame_kind": "%s frame on %s topic %r",
    "tid_topic": "frame from %r on topic of %r",
}

# "must": what a field must be; a key that is not here is the text itself
EXPECTED = {
    "u32": "an int 0..2**32-1",
    "text": "a text string",
    "utf8_len": "%d..%d UTF-8 bytes",
    "bytes_max": "bytes of 0..%d",
    "i64": "a signed 64-bit int",
    "number": "an int or float",
    "int_alias": "an int alias",
    "level": "1 (warning) or 2 (alarm)",
    "rssi": "None or an int %d..%d",
    "counters": "at most %d counters",
    "tree": "null, bool, number, text, array or map",
    "one_of": "one of %s",
    "int_range": "an int %d..%d",
    "uniq_chan": "unique channel names",
    "map_keys": "maps with keys %s",
    "devices": "at most %d devices",
    "uniq_dev": "unique device names",
    "one_range": "at least one range",
    "ranges": "at most %d ranges",
    "count": "1.. with first + count - 1 <= 2**32-1",
    "disjoint": "sorted, disjoint ranges that do not touch",
    "pairs": "first, count pairs",
    "state": "'raised' or 'cleared'",
}

# "must" and "alias_rng": the field a check names; other names are the text
WHAT = {
    "ch_alias": "channel alias",
    "ch_name": "channel name",
    "ch_unit": "channel unit",
    "ch_kind": "channel kind",
    "ch_exp": "channel exp",
    "dev_name": "device name",
    "dev_model": "device model",
    "dev_status": "device status",
    "rng_first": "range first",
    "rng_count": "range count",
}


def render(key, args):
    """The message for ``ProtocolError(reason, key, *args)``.

    Raises KeyError, TypeError or ValueError when the arguments do not
    fit the key's text (a bug of the raiser, caught by the unit tests).
    """
    text = TEXTS.get(key)
    if text is None:
        return key
    if key == "must":
        what, expected, eargs, value = args
        expected = EXPECTED.get(expected, expected)
        if eargs:
            expected = expected % eargs
        return text % (WHAT.get(what, what), expected, value)
    if key == "alias_rng":
        args = (WHAT.get(args[0], args[0]),) + args[1:]
    return text % args if args else text
