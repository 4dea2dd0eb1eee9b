"""Payload size and decode rate of the mimamori frame format, next to the usual alternatives.

usage: python bench/bench_protocol.py [--seconds S]

Prints one JSON object, then the same figures as a markdown table (the
"Protocol" section of docs/benchmarks.md is a copy of that table).

Sizes are MQTT payload bytes for the same information: terminal id, boot,
sequence number, time, and the six channels of the README example (IM-100
Io/Ior, PM-300 kW/kWh/V, TH-10 temperature):

* mimamori: ``protocol.frames.encode`` of a data frame (aliases, raw counts);
* JSON: a compact object with channel names and engineering values;
* SenML-CBOR: RFC 8428 records with its integer labels, encoded by cbor2,
  SenML units, base name and base time on the first record;
* Sparkplug-B-like: the Sparkplug B protobuf ``Payload`` hand-encoded (varints,
  field keys) with metric aliases instead of names, in two flavours: minimal
  (alias + value) and as Eclipse Tahu writes it (plus datatype and a
  per-metric timestamp).

Decode rates are frames per second on one CPython core: the pure-Python
``protocol.frames.decode`` the terminal also runs; cbor2 (compiled) for the
bytes followed by ``protocol.frames.from_obj`` for validation, once with
plain ``cbor2.loads`` and once with the strict decoder the cloud must use
(``cloud/codec.py``, see protocol/README.md section 10).
"""

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.codec import decode_frame as cloud_decode
from protocol import frames

TS = 1764201600
TID = "T0001"
# name, SenML unit, exp, raw counts of the example
CHANNELS = [
    ("io", "A", -4, 12),  # 1.2 mA
    ("ior", "A", -4, 3),
    ("kw", "W", 1, 1234),  # 12.34 kW
    ("kwh", "Wh", 2, 123456),  # 12345.6 kWh
    ("v", "V", -1, 1015),
    ("t", "Cel", -1, 253),
]
BATCH = 60  # one-minute samples in one frame


def sample_values(i):
    """Raw counts of sample ``i``, drifting a little like real readings."""
    return [
        raw + (i % 3 if n == 0 else i if n in ("kw", "kwh") else 0) for n, _u, _e, raw in CHANNELS
    ]


def engineering(raw, exp):
    v = raw * 10.0**exp
    return round(v, 6) if exp < 0 else round(v)


# -- mimamori -------------------------------------------------------------------


def mimamori(n):
    samples = [{"dt": 0 if i == 0 else 60, "values": sample_values(i)} for i in range(n)]
    f = {
        "type": "data",
        "tid": TID,
        "boot": 3,
        "seq": 42,
        "ts": TS,
        "unsynced": False,
        "samples": samples,
    }
    return frames.encode(f)


# -- JSON -----------------------------------------------------------------------

JSON_NAMES = ["io_mA", "ior_mA", "kW", "kWh", "V", "degC"]
JSON_EXP = [-1, -1, -2, -1, -1, -1]


def as_json(n):
    rows = []
    for i in range(n):
        vals = sample_values(i)
        row = {"ts": TS + 60 * i}
        for name, exp, raw in zip(JSON_NAMES, JSON_EXP, vals, strict=True):
            row[name] = round(raw * 10.0**exp, 3)
        rows.append(row)
    doc = {"tid": TID, "boot": 3, "seq": 42}
    if n == 1:
        doc.update(rows[0])
    else:
        doc["samples"] = rows
    return json.dumps(doc, separators=(",", ":")).encode()


# -- SenML-CBOR (RFC 8428 labels: bn -2, bt -3, n 0, u 1, v 2, t 6) --------------


def senml_cbor(n):
    records = []
    for i in range(n):
        for j, (name, unit, exp, _raw) in enumerate(CHANNELS):
            rec = {0: name, 1: unit, 2: engineering(sample_values(i)[j], exp)}
            if i:
                rec[6] = 60 * i
            if not records:
                rec[-2] = "urn:dev:mimamori:%s:" % TID
                rec[-3] = TS
            records.append(rec)
    return cbor2.dumps(records, canonical=True)


# -- Sparkplug-B-like protobuf ----------------------------------------------------


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, wire, payload):
    key = _varint(num << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    return key + _varint(len(payload)) + payload


def sparkplug(n, tahu):
    """Payload{1 timestamp, 2 metrics, 3 seq}; Metric{2 alias, 3 timestamp, 4 datatype, 10 int}."""
    body = _field(1, 0, TS * 1000)
    for i in range(n):
        for j, raw in enumerate(sample_values(i)):
            m = _field(2, 0, j)
            if tahu or n > 1:  # historical samples need their own time
                m += _field(3, 0, (TS + 60 * i) * 1000)
            if tahu:
                m += _field(4, 0, 7)  # UInt32
            m += _field(10, 0, raw)
            body += _field(2, 2, m)
    body += _field(3, 0, 42)
    return body


# -- decode rate ------------------------------------------------------------------


def rate(fn, arg, seconds):
    """Calls per second of ``fn(arg)`` on this core, best of three runs."""
    best = 0.0
    for _ in range(3):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds / 3
        while True:
            for _ in range(100):
                fn(arg)
            n += 100
            t = time.perf_counter()
            if t >= deadline:
                break
        best = max(best, n / (t - t0))
    return best


def cbor2_decode(buf):
    return frames.from_obj(cbor2.loads(buf))


def measure(seconds):
    one, batch = mimamori(1), mimamori(BATCH)
    sizes = {}
    for label, n in (("one_sample", 1), ("batch_60", BATCH)):
        sizes[label] = {
            "mimamori": len(mimamori(n)),
            "json": len(as_json(n)),
            "senml_cbor": len(senml_cbor(n)),
            "sparkplug_min": len(sparkplug(n, tahu=False)),
            "sparkplug_tahu": len(sparkplug(n, tahu=True)),
        }
    rates = {
        "protocol_decode_one": rate(frames.decode, one, seconds),
        "protocol_decode_batch_60": rate(frames.decode, batch, seconds),
        "cbor2_from_obj_one": rate(cbor2_decode, one, seconds),
        "cbor2_from_obj_batch_60": rate(cbor2_decode, batch, seconds),
        "cbor2_strict_one": rate(cloud_decode, one, seconds),
        "cbor2_strict_batch_60": rate(cloud_decode, batch, seconds),
        "protocol_encode_one": rate(frames.encode, frames.decode(one), seconds),
    }
    return {
        "python": platform.python_implementation() + " " + platform.python_version(),
        "cbor2": importlib.metadata.version("cbor2"),
        "machine": platform.machine(),
        "payload_bytes": sizes,
        "frames_per_second": {k: round(v) for k, v in rates.items()},
    }


def table(result):
    s = result["payload_bytes"]
    r = result["frames_per_second"]
    lines = [
        "| payload for the same data | 1 sample x 6 channels | 60 samples x 6 channels |",
        "|---|---:|---:|",
    ]
    labels = [
        ("mimamori CBOR frame", "mimamori"),
        ("JSON (names, engineering values)", "json"),
        ("SenML-CBOR (RFC 8428 integer labels)", "senml_cbor"),
        ("Sparkplug-B-like, aliases, minimal", "sparkplug_min"),
        ("Sparkplug-B-like, aliases, as Tahu writes", "sparkplug_tahu"),
    ]
    for text, key in labels:
        lines.append("| %s | %d B | %d B |" % (text, s["one_sample"][key], s["batch_60"][key]))
    lines += [
        "",
        "| CPython decode, one core (%s) | 1-sample frame | 60-sample frame |" % result["python"],
        "|---|---:|---:|",
        "| `protocol.frames.decode` (pure Python, the terminal's code) "
        "| %s frames/s | %s frames/s |"
        % (format(r["protocol_decode_one"], ","), format(r["protocol_decode_batch_60"], ",")),
        "| cbor2.loads + `frames.from_obj` | %s frames/s | %s frames/s |"
        % (format(r["cbor2_from_obj_one"], ","), format(r["cbor2_from_obj_batch_60"], ",")),
        "| strict cbor2 decoder (README recipe) + `frames.from_obj` | %s frames/s | %s frames/s |"
        % (format(r["cbor2_strict_one"], ","), format(r["cbor2_strict_batch_60"], ",")),
        "| `protocol.frames.encode` | %s frames/s | |" % format(r["protocol_encode_one"], ","),
    ]
    return "\n".join(lines)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per rate (default 3)")
    args = parser.parse_args(argv)
    result = measure(args.seconds)
    print(json.dumps(result, indent=2))
    print()
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
