"""Generate the protocol's golden vectors into ``protocol/vectors/``.

usage: python tools/gen_vectors.py [--check]

Each vector is a JSON file ``<nnn>-<name>.json``::

    {"name": ..., "description": ..., "hex": "...", "frame": {...}}   valid
    {"name": ..., "description": ..., "hex": "...", "error": "reason"}  invalid

A valid vector with ``"canonical": false`` decodes to ``frame`` but is not
what an encoder writes (longer integer heads, unsorted keys, reserved flag
bits...): decoders must accept it, encoders re-encode it differently.

The bytes come from cbor2 (``canonical=True``) applied to the wire layout
written out independently below, not from ``protocol``'s own encoder, so the
vectors are an outside check on it.  Hostile inputs are spliced in as raw
bytes.  ``--check`` exits 1 when the files on disk differ from what this
script produces (the unit tests run the same comparison); without it the
directory is rewritten and stale vector files are removed.
"""

import json
import sys
from pathlib import Path

import cbor2

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "protocol" / "vectors"

TS = 1764201600  # 2025-11-27T00:00:00Z
TID = "T0001"
CODES = {
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
U32_MAX = 2**32 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# the 6-channel terminal of the README: IM-100 io/ior, PM-300 kw/kwh/v, TH-10 t
CHANNELS = [
    {"alias": 0, "name": "io", "unit": "mA", "kind": "leak", "exp": -1},
    {"alias": 1, "name": "ior", "unit": "mA", "kind": "leak", "exp": -1},
    {"alias": 2, "name": "kw", "unit": "kW", "kind": "power", "exp": -2},
    {"alias": 3, "name": "kwh", "unit": "kWh", "kind": "energy", "exp": -1},
    {"alias": 4, "name": "v", "unit": "V", "kind": "voltage", "exp": -1},
    {"alias": 5, "name": "t", "unit": "degC", "kind": "temperature", "exp": -1},
]
SIX = [12, 3, 1234, 123456, 1015, 253]


def frame(ftype, *, tid=TID, boot=3, seq=42, ts=TS, unsynced=False, **fields):
    f = {"type": ftype, "tid": tid, "boot": boot, "seq": seq, "ts": ts, "unsynced": unsynced}
    f.update(fields)
    return f


def layout(f):
    """The wire array of a frame dict, written from the spec (README.md)."""
    head = [1, CODES[f["type"]], f["tid"], f["boot"], f["seq"], f["ts"], 1 if f["unsynced"] else 0]
    t = f["type"]
    if t == "birth":
        chans = [[c["alias"], c["name"], c["unit"], c["kind"], c["exp"]] for c in f["channels"]]
        if "devices" in f:  # optional trailing field (README section 5)
            devs = [[d["name"], d["model"], d["status"]] for d in f["devices"]]
            return [*head, f["fw"], f["cfg"], chans, devs]
        return [*head, f["fw"], f["cfg"], chans]
    if t == "data":
        rows = []
        for s in f["samples"]:
            values = list(s["values"])
            while values and values[-1] is None:
                values.pop()
            row = [s["dt"], values]
            if "quality" in s:
                row.append([x for pair in s["quality"] for x in pair])
            rows.append(row)
        return [*head, rows]
    if t == "alarm":
        state = {"raised": 1, "cleared": 0}[f["state"]]
        return [*head, f["alias"], f["cond"], f["level"], state, f["value"], f["threshold"]]
    if t == "ack":
        return [*head, f["for_boot"], [x for pair in f["ranges"] for x in pair]]
    keys = {
        "status": ("uptime", "queued", "dropped", "rssi", "heap", "errors"),
        "cfgack": ("version", "ok", "reason"),
        "cmdres": ("id", "ok", "result"),
        "death": (),
        "config": ("version", "config"),
        "cmd": ("id", "name", "args"),
        "otareq": ("job", "path", "off", "len"),
        "otastat": ("job", "state", "done", "total", "reason"),
        "chunk": ("job", "path", "off", "size", "data"),
    }[t]
    return head + [f[k] for k in keys]


def dumps(obj):
    return cbor2.dumps(obj, canonical=True)


MARK = "\x00splice\x00"


def splice(obj, *raws):
    """Encode ``obj`` and replace each MARK string in it by the next raw bytes."""
    buf = dumps(obj)
    mark = dumps(MARK)
    for raw in raws:
        i = buf.index(mark)
        buf = buf[:i] + raw + buf[i + len(mark) :]
    return buf


def data(values, **kw):
    return frame("data", samples=[{"dt": 0, "values": values}], **kw)


def deep(levels):
    """A config map nested so the innermost map sits at frame depth ``levels``."""
    inner = {"x": 1}
    for _ in range(levels - 2):
        inner = {"n": inner}
    return inner


def sized_config(target):
    """A valid config frame whose canonical encoding is exactly ``target`` bytes."""
    pad = 0
    while True:
        cfg = {"k%02d" % i: "x" * 200 for i in range(target // 210)}
        cfg["pad"] = "y" * pad
        f = frame("config", tid="cloud", boot=0, seq=1, version=5, config=cfg)
        n = len(dumps(layout(f)))
        if n == target:
            return f
        if n > target:
            raise RuntimeError("cannot hit %d bytes exactly" % target)
        pad += 1 if target - n < 3 else target - n - 2


def valid():
    """(name, description, frame[, raw bytes when non-canonical])."""
    birth = frame("birth", seq=41, fw="1.0.0", cfg=3, channels=CHANNELS)
    many = [
        {"alias": i, "name": "c%02d" % i, "unit": "", "kind": "other", "exp": 0} for i in range(64)
    ]
    unicode_ch = [
        {"alias": 0, "name": "温度", "unit": "°C", "kind": "temperature", "exp": -1},
        {"alias": 1, "name": "µ-ch😀", "unit": "µS/cm", "kind": "other", "exp": -3},
    ]
    batch = [
        {"dt": 0 if i == 0 else 60, "values": [12 + i % 3, 3, 1234 + i, 123456 + i, 1015, 253]}
        for i in range(60)
    ]
    edges = [
        0,
        23,
        24,
        255,
        256,
        65535,
        65536,
        U32_MAX,
        U32_MAX + 1,
        -1,
        -24,
        -25,
        -256,
        -257,
        INT64_MIN,
        INT64_MAX,
    ]
    floats = [
        1.5,
        -0.0,
        5.960464477539063e-08,
        65504.0,
        100000.0,
        3.4028234663852886e38,
        1.401298464324817e-45,
        0.15625,
        -2.5,
    ]
    status = frame(
        "status",
        seq=50,
        uptime=86400,
        queued=0,
        dropped=0,
        rssi=-71,
        heap=48123,
        errors={"modbus_timeout": 3, "crc": 1},
    )
    config = frame(
        "config",
        tid=TID,
        boot=0,
        seq=7,
        version=4,
        config={
            "interval": 60,
            "ntp": "pool.ntp.org",
            "sensors": [{"model": "IM-100", "unit_id": 1}, {"model": "PM-300", "unit_id": 2}],
            "alarms": [
                {"alias": 1, "cond": "hi", "warn": 30, "alarm": 50, "on_delay": 60, "hyst": 2.5}
            ],
            "tz_hint": None,
            "debug": False,
        },
    )
    yield "birth", "birth of the README's 6-channel terminal", birth
    yield (
        "birth-no-channels",
        "a terminal with nothing configured yet",
        frame("birth", seq=0, fw="1.0.0", cfg=0, channels=[]),
    )
    yield (
        "birth-64-channels",
        "MAX_CHANNELS channels, aliases 0..63",
        frame("birth", seq=0, fw="1.0.0", cfg=9, channels=many),
    )
    yield (
        "birth-unicode",
        "2-, 3- and 4-byte UTF-8 in names and units",
        frame("birth", seq=0, fw="1.0.0-βeta", cfg=1, channels=unicode_ch),
    )
    yield "data-one-sample", "one sample of 6 channels (README example, <= 48 bytes)", data(SIX)
    yield (
        "data-batch-60",
        "60 one-minute samples batched with time deltas",
        frame("data", seq=43, samples=batch),
    )
    yield (
        "data-quality",
        "quality codes 1, 2, 3; alias 5 beyond the values array",
        frame(
            "data",
            seq=44,
            samples=[{"dt": 0, "values": [12, None, 1234], "quality": [[1, 1], [2, 2], [5, 3]]}],
        ),
    )
    yield (
        "data-all-unreachable",
        "no values at all, every channel unreachable",
        frame(
            "data", seq=45, samples=[{"dt": 5, "values": [], "quality": [[i, 1] for i in range(6)]}]
        ),
    )
    yield (
        "data-none-gaps",
        "None before and between values (not sampled this time)",
        data([None, 3, None, 5]),
    )
    yield "data-int-edges", "integer head boundaries, u32 and int64 extremes", data(edges)
    yield "data-floats", "half, half subnormal, single, single subnormal, signed zero", data(floats)
    yield (
        "data-240-samples",
        "MAX_SAMPLES samples of one channel",
        frame("data", samples=[{"dt": 0 if i == 0 else 1, "values": [i]} for i in range(240)]),
    )
    yield (
        "data-unsynced",
        "flags bit 0: clock not synchronised (2000 epoch + 1 h)",
        data(SIX, unsynced=True, ts=946688400),
    )
    yield (
        "data-u32-edges",
        "boot, seq, ts and dt at 2**32-1",
        frame(
            "data", boot=U32_MAX, seq=U32_MAX, ts=U32_MAX, samples=[{"dt": U32_MAX, "values": [1]}]
        ),
    )
    yield "data-64-values", "MAX_CHANNELS positional values", data(list(range(64)))
    yield (
        "alarm-raised",
        "Ior over the alarm level",
        frame(
            "alarm", seq=60, alias=1, cond="hi", level=2, state="raised", value=312, threshold=300
        ),
    )
    yield (
        "alarm-cleared",
        "Ior back under the level",
        frame(
            "alarm", seq=61, alias=1, cond="hi", level=2, state="cleared", value=280, threshold=300
        ),
    )
    yield (
        "alarm-terminal",
        "terminal-level condition: no alias, value or threshold",
        frame(
            "alarm",
            seq=62,
            unsynced=True,
            alias=None,
            cond="clock",
            level=1,
            state="raised",
            value=None,
            threshold=None,
        ),
    )
    yield (
        "alarm-float",
        "float value and threshold, warning level",
        frame(
            "alarm", seq=63, alias=5, cond="lo", level=1, state="raised", value=-2.5, threshold=0.5
        ),
    )
    yield "status", "heartbeat with error counters", status
    yield (
        "status-minimal",
        "no RSSI (wired link), no error counters",
        frame("status", seq=51, uptime=0, queued=0, dropped=0, rssi=None, heap=0, errors={}),
    )
    yield (
        "cfgack-ok",
        "config version 3 accepted",
        frame("cfgack", seq=46, version=3, ok=True, reason=None),
    )
    yield (
        "cfgack-rejected",
        "config version 4 refused with a reason",
        frame("cfgack", seq=47, version=4, ok=False, reason="alarms[0].alias: no such channel"),
    )
    yield (
        "cmdres-ok",
        "command result with a nested map",
        frame(
            "cmdres",
            seq=48,
            id=7,
            ok=True,
            result={"fw": "1.0.0", "free": 48123, "up": True, "list": [1, 2.5, None, "x"]},
        ),
    )
    yield (
        "cmdres-error",
        "command refused",
        frame("cmdres", seq=49, id=8, ok=False, result="unknown command"),
    )
    yield (
        "cmdres-none",
        "command done, nothing to return",
        frame("cmdres", seq=52, id=9, ok=True, result=None),
    )
    yield (
        "death",
        "last will registered at connect (seq just before the birth)",
        frame("death", seq=40),
    )
    yield "config", "retained config from the cloud (boot 0)", config
    yield (
        "config-max-depth",
        "config nested to exactly MAX_DEPTH containers",
        frame("config", boot=0, seq=8, version=5, config=deep(8)),
    )
    yield "config-4096-bytes", "a frame of exactly MAX_FRAME_BYTES", sized_config(4096)
    yield (
        "cmd",
        "command without arguments",
        frame("cmd", boot=0, seq=9, id=10, name="reboot", args={}),
    )
    yield (
        "cmd-args",
        "command with arguments; 32-character terminal id",
        frame(
            "cmd",
            tid="Az09_-" + "x" * 26,
            boot=0,
            seq=10,
            id=11,
            name="sample_now",
            args={"aliases": [0, 1], "dry": False},
        ),
    )

    # accepted but not canonical: decoders must take them, encoders never write them
    one = data(SIX)
    yield (
        "noncanonical-ints",
        "ints and lengths in longer heads than needed",
        one,
        (
            b"\x98\x08"
            + b"\x01"
            + b"\x18\x02"
            + dumps(TID)
            + b"\x1a\x00\x00\x00\x03"
            + b"\x1b\x00\x00\x00\x00\x00\x00\x00\x2a"
            + dumps(TS)
            + b"\x00"
            + b"\x81\x82\x00\x86"
            + b"".join(dumps(v) for v in SIX)
        ),
    )
    yield (
        "noncanonical-float",
        "1.5 sent as a double",
        data([1.5]),
        splice(layout(data([MARK])), b"\xfb" + bytes.fromhex("3ff8000000000000")),
    )
    yield (
        "noncanonical-map-order",
        "map keys not in canonical order",
        status,
        splice(
            layout(status | {"errors": MARK}),
            b"\xa2" + dumps("modbus_timeout") + b"\x03" + dumps("crc") + b"\x01",
        ),
    )
    yield (
        "reserved-flags",
        "reserved flag bits set: ignored, bit 0 still read",
        data([1], unsynced=True),
        dumps(_with_flags(data([1]), 0x83)),
    )
    yield (
        "trailing-null",
        "a trailing null value (encoders drop it)",
        data([1, None]),
        splice(layout(data([1, MARK])), b"\xf6"),
    )


def _with_flags(f, flags):
    obj = layout(f)
    obj[6] = flags
    return obj


def invalid():
    """(name, description, error reason, raw bytes)."""
    one = dumps(layout(data(SIX)))
    obj = layout(data(SIX))

    def with_(i, value):
        return dumps(put(obj, i, value))

    def raw_at(i, raw):
        o = list(obj)
        o[i] = MARK
        return splice(o, raw)

    def sample(values, quality=None, **kw):
        return layout(
            data(values, **kw)
            | {"samples": [{"dt": 0, "values": values} | ({"quality": quality} if quality else {})]}
        )

    birth = layout(frame("birth", fw="1.0.0", cfg=3, channels=CHANNELS))
    status = layout(frame("status", uptime=1, queued=0, dropped=0, rssi=None, heap=1, errors={}))
    cfg = layout(frame("config", boot=0, version=1, config={}))
    alarm = layout(
        frame("alarm", alias=1, cond="hi", level=2, state="raised", value=1, threshold=1)
    )

    def chans(rows):
        b = list(birth)
        b[9] = rows
        return dumps(b)

    rows = [[c["alias"], c["name"], c["unit"], c["kind"], c["exp"]] for c in CHANNELS]

    yield "empty", "no bytes at all", "truncated", b""
    yield "truncated", "the README data frame without its last byte", "truncated", one[:-1]
    yield "truncated-head", "cut inside the ts integer", "truncated", one[:12]
    yield "trailing-bytes", "one zero byte after the frame", "trailing_bytes", one + b"\x00"
    yield "two-frames", "two frames in one payload", "trailing_bytes", one + one
    yield "bad-version-2", "version 2 is not this protocol", "bad_version", with_(0, 2)
    yield "bad-version-0", "version 0", "bad_version", with_(0, 0)
    yield "bad-version-text", "version as text", "bad_version", with_(0, "1")
    yield "unknown-type", "type code 9 is not assigned", "bad_type", with_(1, 9)
    yield "type-as-text", "type given by name instead of code", "bad_type", with_(1, "data")
    yield "bad-tid-slash", "terminal id with a topic separator", "bad_tid", with_(2, "T/1")
    yield "bad-tid-wildcard", "terminal id with an MQTT wildcard", "bad_tid", with_(2, "T+")
    yield "bad-tid-empty", "empty terminal id", "bad_tid", with_(2, "")
    yield "bad-tid-33", "terminal id of 33 characters", "bad_tid", with_(2, "T" * 33)
    yield "bad-tid-int", "terminal id as an integer", "bad_tid", with_(2, 1)
    yield "negative-seq", "seq -1", "bad_field", with_(4, -1)
    yield "seq-over-u32", "seq 2**32", "bad_field", with_(4, 2**32)
    yield "boot-bool", "boot as true", "bad_field", with_(3, True)
    yield "seq-float", "seq 1.0 (a float is not an int)", "bad_field", with_(4, 1.0)
    yield "flags-negative", "flags -1", "bad_field", with_(6, -1)
    yield (
        "birth-65-channels",
        "MAX_CHANNELS + 1 channels",
        "too_many_channels",
        chans([[i, "c%d" % i, "", "other", 0] for i in range(65)]),
    )
    yield (
        "data-65-values",
        "MAX_CHANNELS + 1 values",
        "too_many_channels",
        dumps(sample(list(range(65)))),
    )
    yield (
        "data-241-samples",
        "MAX_SAMPLES + 1 samples",
        "too_many_samples",
        dumps(
            layout(
                frame(
                    "data", samples=[{"dt": 0 if i == 0 else 1, "values": [i]} for i in range(241)]
                )
            )
        ),
    )
    yield "data-no-samples", "a data frame must carry a sample", "bad_field", with_(7, [])
    yield (
        "oversize",
        "MAX_FRAME_BYTES + 1 bytes (otherwise valid)",
        "too_large",
        dumps(layout(sized_config(4097))),
    )
    yield "negative-dt", "first sample 1 s before ts", "bad_field", with_(7, [[-1, [1]]])
    yield (
        "non-monotonic-dt",
        "second sample at the same second",
        "bad_field",
        with_(7, [[0, [1]], [0, [2]]]),
    )
    yield "sample-no-values", "sample without its values array", "bad_field", with_(7, [[0]])
    yield (
        "indefinite-array",
        "top-level array of indefinite length",
        "unsupported_cbor",
        (b"\x9f" + one[1:] + b"\xff"),
    )
    yield (
        "indefinite-text",
        "terminal id as an indefinite text string",
        "unsupported_cbor",
        (raw_at(2, b"\x7f\x63T00\x62\x30\x31\xff")),
    )
    yield (
        "tag-epoch",
        "ts wrapped in tag 1 (epoch time)",
        "unsupported_cbor",
        raw_at(5, b"\xc1" + dumps(TS)),
    )
    yield "tag-bignum", "seq as a tag-2 bignum", "unsupported_cbor", raw_at(4, b"\xc2\x41\x2a")
    yield (
        "self-describe-tag",
        "tag 55799 before the frame",
        "unsupported_cbor",
        (b"\xd9\xd9\xf7" + one),
    )
    yield (
        "undefined",
        "undefined (0xf7) as a value",
        "unsupported_cbor",
        splice(sample([MARK]), b"\xf7"),
    )
    yield (
        "simple-value",
        "simple value 16 as a value",
        "unsupported_cbor",
        splice(sample([MARK]), b"\xf0"),
    )
    yield (
        "simple-value-2byte",
        "two-byte simple value 32",
        "unsupported_cbor",
        splice(sample([MARK]), b"\xf8\x20"),
    )
    yield "reserved-header", "additional info 28 (reserved)", "unsupported_cbor", raw_at(4, b"\x1c")
    yield (
        "stray-break",
        "break code inside a definite array",
        "unsupported_cbor",
        splice(sample([MARK]), b"\xff"),
    )
    yield (
        "map-key-array",
        "an array as map key",
        "unsupported_cbor",
        _config_raw(cfg, b"\xa1\x80\x01"),
    )
    yield "bad-utf8-byte", "0xff inside a text string", "bad_utf8", raw_at(2, b"\x62T\xff")
    yield (
        "bad-utf8-overlong",
        "overlong encoding of '/' (c0 af)",
        "bad_utf8",
        raw_at(2, b"\x63T\xc0\xaf"),
    )
    yield (
        "bad-utf8-surrogate",
        "UTF-16 surrogate encoded in UTF-8",
        "bad_utf8",
        raw_at(2, b"\x64T\xed\xa0\x80"),
    )
    yield (
        "bad-utf8-above-max",
        "code point above U+10FFFF",
        "bad_utf8",
        raw_at(2, b"\x65T\xf4\x90\x80\x80"),
    )
    yield "bad-utf8-cut", "multi-byte sequence cut short", "bad_utf8", raw_at(2, b"\x63T\xe6\x97")
    yield (
        "too-deep",
        "config nested one level beyond MAX_DEPTH",
        "too_deep",
        dumps(layout(frame("config", boot=0, version=1, config=deep(9)))),
    )
    yield (
        "duplicate-key",
        "the same error counter twice",
        "duplicate_key",
        _status_raw(status, b"\xa2\x63crc\x01\x63crc\x02"),
    )
    yield (
        "duplicate-alias",
        "two channels with alias 1",
        "bad_alias",
        chans([*rows[:2], [1, "kw", "kW", "power", -2]]),
    )
    yield "alias-64", "alias equal to MAX_CHANNELS", "bad_alias", chans([[64, "x", "", "other", 0]])
    yield "alias-negative", "alias -1 in an alarm", "bad_alias", dumps(put(alarm, 7, -1))
    yield (
        "quality-unsorted",
        "quality aliases out of order",
        "bad_alias",
        dumps(sample([1, 2], [[1, 1], [0, 1]])),
    )
    yield (
        "quality-duplicate",
        "the same alias twice in quality",
        "bad_alias",
        dumps(sample([1, 2], [[1, 1], [1, 2]])),
    )
    yield (
        "quality-code-0",
        "quality code 0 (good is never listed)",
        "bad_field",
        dumps(sample([1, 2], [[0, 0]])),
    )
    yield (
        "quality-code-4",
        "quality code 4 is not assigned",
        "bad_field",
        dumps(sample([1, 2], [[0, 4]])),
    )
    yield (
        "quality-empty",
        "empty quality array (omit it instead)",
        "bad_field",
        with_(7, [[0, [1], []]]),
    )
    yield (
        "quality-odd",
        "quality array with an odd count",
        "bad_field",
        with_(7, [[0, [1], [0, 1, 2]]]),
    )
    yield "nan-value", "NaN as a value", "bad_field", dumps(sample([float("nan")]))
    yield (
        "infinite-threshold",
        "infinite alarm threshold",
        "bad_field",
        dumps(put(alarm, 12, float("inf"))),
    )
    yield (
        "value-over-int64",
        "value 2**63 (beyond signed 64-bit)",
        "bad_field",
        dumps(sample([2**63])),
    )
    yield "value-bool", "true as a channel value", "bad_field", dumps(sample([True]))
    yield (
        "huge-array-length",
        "array claims 2**32 items",
        "truncated",
        (b"\x9a\xff\xff\xff\xff\x01"),
    )
    yield (
        "huge-bytes-length",
        "byte string claims 2**64-1 bytes",
        "truncated",
        (b"\x5b" + b"\xff" * 8),
    )
    yield "huge-map-length", "map claims 2**31 pairs", "truncated", b"\xba\x80\x00\x00\x00"
    yield "huge-text-in-frame", "tid claims 65535 bytes", "truncated", raw_at(2, b"\x79\xff\xffT")
    yield (
        "top-level-map",
        "a map instead of the frame array",
        "bad_field",
        dumps({"v": 1, "type": 2}),
    )
    yield "top-level-int", "a bare integer", "bad_field", b"\x01"
    yield "empty-array", "an empty array", "bad_field", b"\x80"
    yield "short-head", "array cut after the terminal id", "bad_field", dumps(obj[:3])
    yield (
        "death-extra-field",
        "death frame with one element too many",
        "bad_field",
        dumps([*layout(frame("death")), 0]),
    )
    yield "birth-missing-field", "birth frame without channels", "bad_field", dumps(birth[:9])
    yield (
        "bytes-in-config",
        "a byte string in config (not in the JSON model)",
        "bad_field",
        (_config_raw(cfg, b"\xa1\x61k\x42\x00\x01")),
    )
    yield (
        "int-key-in-config",
        "an integer map key in config",
        "bad_field",
        _config_raw(cfg, b"\xa1\x01\x01"),
    )
    yield "config-not-map", "config given as an array", "bad_field", dumps(put(cfg, 8, [1]))
    yield "alarm-state-2", "alarm state must be 0 or 1", "bad_field", dumps(put(alarm, 10, 2))
    yield "alarm-level-3", "alarm level must be 1 or 2", "bad_field", dumps(put(alarm, 9, 3))
    yield (
        "cond-too-long",
        "alarm condition of 17 bytes",
        "bad_field",
        dumps(put(alarm, 8, "c" * 17)),
    )
    yield (
        "unknown-kind",
        "channel kind not in the list",
        "bad_field",
        chans([[0, "x", "", "pressure", 0]]),
    )
    yield "exp-10", "decimal exponent out of -9..9", "bad_field", chans([[0, "x", "", "other", 10]])
    yield (
        "duplicate-channel-name",
        "two channels named io",
        "bad_field",
        chans([[0, "io", "mA", "leak", -1], [1, "io", "mA", "leak", -1]]),
    )
    yield (
        "name-too-long",
        "channel name of 65 bytes",
        "bad_field",
        chans([[0, "n" * 65, "", "other", 0]]),
    )
    yield "rssi-out-of-range", "rssi -256", "bad_field", dumps(put(status, 10, -256))


def added():
    """Vectors of later additions, numbered after the original set so its
    file names stay put: ``("valid", name, description, frame)`` or
    ``("invalid", name, description, reason, raw bytes)``."""

    def ack(ranges, **kw):
        return frame("ack", boot=0, seq=0, for_boot=3, ranges=ranges, **kw)

    wide = [[10 * i, 1 + i % 3] for i in range(64)]
    yield "valid", "ack", "the cloud stored seq 40..47 of boot 3", ack([[40, 8]])
    yield (
        "valid",
        "ack-ranges",
        "a single seq, runs, the u32 edge",
        ack([[0, 1], [2, 40], [1000, 3], [U32_MAX, 1]]),
    )
    yield "valid", "ack-64-ranges", "MAX_ACK_RANGES ranges", ack(wide)
    base = layout(ack([[40, 8]]))
    yield (
        "invalid",
        "ack-no-ranges",
        "an ack must cover a frame",
        "bad_field",
        dumps(put(base, 8, [])),
    )
    yield (
        "invalid",
        "ack-65-ranges",
        "MAX_ACK_RANGES + 1 ranges",
        "bad_field",
        dumps(put(base, 8, [x for i in range(65) for x in (10 * i, 1)])),
    )
    yield (
        "invalid",
        "ack-odd",
        "ranges array with an odd count",
        "bad_field",
        dumps(put(base, 8, [40, 8, 50])),
    )
    yield (
        "invalid",
        "ack-count-0",
        "a range of no frames",
        "bad_field",
        dumps(put(base, 8, [40, 0])),
    )
    yield (
        "invalid",
        "ack-unsorted",
        "ranges out of order",
        "bad_field",
        dumps(put(base, 8, [50, 1, 40, 1])),
    )
    yield (
        "invalid",
        "ack-overlap",
        "ranges that overlap",
        "bad_field",
        dumps(put(base, 8, [40, 8, 45, 8])),
    )
    yield (
        "invalid",
        "ack-touching",
        "adjacent ranges (one run is one range)",
        "bad_field",
        dumps(put(base, 8, [40, 2, 42, 1])),
    )
    yield (
        "invalid",
        "ack-beyond-u32",
        "a range past 2**32-1",
        "bad_field",
        dumps(put(base, 8, [U32_MAX, 2])),
    )
    yield "invalid", "ack-boot-text", "for_boot as text", "bad_field", dumps(put(base, 7, "3"))
    yield "invalid", "ack-missing-ranges", "ack frame without ranges", "bad_field", dumps(base[:8])
    # over-the-air updates (docs/ota.md)
    req = frame("otareq", seq=90, job=12, path="edge/agent.mpy", off=4096, len=2048)
    yield "valid", "otareq", "asks 2048 bytes of edge/agent.mpy from offset 4096", req
    yield (
        "valid",
        "otastat",
        "job 12 downloading: 30 % of 104 000 bytes",
        frame(
            "otastat", seq=91, job=12, state="downloading", done=31200, total=104000, reason=None
        ),
    )
    chunk = frame(
        "chunk",
        boot=0,
        seq=0,
        job=12,
        path="edge/agent.mpy",
        off=4096,
        size=4100,
        data=b"M\x06\x00\x1f",
    )
    yield "valid", "chunk", "the last 4 bytes of a file (data is the one byte string)", chunk
    big = layout(req)
    yield (
        "invalid",
        "otareq-too-long",
        "len above MAX_CHUNK",
        "bad_field",
        dumps(put(big, 10, 3073)),
    )
    yield "invalid", "otareq-zero", "len 0", "bad_field", dumps(put(big, 10, 0))
    text = layout(chunk)
    yield "invalid", "chunk-text-data", "data as text", "bad_field", dumps(put(text, 11, "M"))
    # the birth's optional devices: which profile each wired device is polled with
    wired = frame(
        "birth",
        seq=41,
        fw="1.4.0",
        cfg=3,
        channels=[
            {"alias": 0, "name": "leak1.ior", "unit": "mA", "kind": "leak", "exp": -1},
            {"alias": 1, "name": "pm1.kw", "unit": "kW", "kind": "power", "exp": -3},
            {"alias": 2, "name": "th1.t", "unit": "degC", "kind": "temperature", "exp": -1},
        ],
        devices=[
            {"name": "leak1", "model": "IM-100", "status": "reference"},
            {"name": "pm1", "model": "SDM120", "status": "documented"},
            {"name": "th1", "model": "TH-10", "status": "test"},
        ],
    )
    yield "valid", "birth-devices", "a birth naming each device's profile and its status", wired
    yield (
        "valid",
        "birth-devices-empty",
        "a terminal with no wiring says so",
        frame("birth", seq=41, fw="1.4.0", cfg=0, channels=[], devices=[]),
    )
    yield (
        "valid",
        "birth-device-new-status",
        "a status this version does not know is kept, not refused",
        frame(
            "birth",
            seq=41,
            fw="2.0.0",
            cfg=0,
            channels=[],
            devices=[{"name": "x1", "model": "XY-9", "status": "unverified"}],
        ),
    )
    dev = layout(wired)
    yield (
        "invalid",
        "birth-device-no-status",
        "a device array of 2 elements",
        "bad_field",
        dumps(put(dev, 10, [["leak1", "IM-100"]])),
    )
    yield (
        "invalid",
        "birth-device-twice",
        "two devices of one name",
        "bad_field",
        dumps(put(dev, 10, [["pm1", "SDM120", "documented"], ["pm1", "SDM630", "documented"]])),
    )
    yield (
        "invalid",
        "birth-device-empty-model",
        "a model must be a name",
        "bad_field",
        dumps(put(dev, 10, [["pm1", "", "documented"]])),
    )
    yield (
        "invalid",
        "birth-12-elements",
        "one element after the optional devices",
        "bad_field",
        dumps([*dev, []]),
    )


def put(obj, i, value):
    """A copy of the wire array ``obj`` with element ``i`` replaced."""
    o = list(obj)
    o[i] = value
    return o


def _config_raw(cfg, raw):
    o = list(cfg)
    o[8] = MARK
    return splice(o, raw)


def _status_raw(status, raw):
    o = list(status)
    o[12] = MARK
    return splice(o, raw)


def build():
    """Return ``{filename: text}`` for every vector, in order."""
    files = {}
    n = 0
    for item in valid():
        n += 1
        name, desc, f = item[0], item[1], item[2]
        raw = item[3] if len(item) > 3 else dumps(layout(f))
        doc = {"name": name, "description": desc}
        if len(item) > 3:
            doc["canonical"] = False
        doc["hex"] = raw.hex()
        doc["frame"] = f
        files["%03d-%s.json" % (n, name)] = _json(doc)
    for name, desc, reason, raw in invalid():
        n += 1
        doc = {"name": name, "description": desc, "hex": raw.hex(), "error": reason}
        files["%03d-%s.json" % (n, name)] = _json(doc)
    for kind, name, desc, *rest in added():
        n += 1
        if kind == "valid":
            f = dict(rest[0])
            if isinstance(f.get("data"), bytes):  # JSON has no bytes: the chunk's data as hex
                f["data_hex"] = f.pop("data").hex()
            doc = {
                "name": name,
                "description": desc,
                "hex": dumps(layout(rest[0])).hex(),
                "frame": f,
            }
        else:
            doc = {"name": name, "description": desc, "hex": rest[1].hex(), "error": rest[0]}
        files["%03d-%s.json" % (n, name)] = _json(doc)
    return files


def _json(doc):
    """One key per line, each value compact: readable diffs, small files."""
    lines = [
        " %s: %s" % (json.dumps(k), json.dumps(v, ensure_ascii=False, separators=(", ", ": ")))
        for k, v in doc.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv):
    files = build()
    if "--check" in argv:
        on_disk = {p.name: p.read_text(encoding="utf-8") for p in OUT.glob("*.json")}
        if on_disk != files:
            print("protocol/vectors differ from tools/gen_vectors.py output", file=sys.stderr)
            return 1
        print("%d vectors up to date" % len(files))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.json"):
        if p.name not in files:
            p.unlink()
    for name, text in files.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print("wrote %d vectors to %s" % (len(files), OUT.relative_to(ROOT)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
