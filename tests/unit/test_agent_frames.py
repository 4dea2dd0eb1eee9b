"""The agent's data frames, property-tested: registers in, exactly the cloud's frames out.

The agent encodes samples as they come and writes the data frame's head at
flush time (edge/agent.py); here random register images go through the
real Modbus master (FakeLink) and the agent, and every frame it publishes
must decode with the cloud's decoder (cloud.codec, cbor2 underneath), carry
the independently decoded register values, and re-encode to the same bytes
with the reference encoder (protocol.frames).
"""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.codec import decode_frame
from protocol import frames
from tests.mpy.test_agent_fakes import Rig

# One device with every register type the profiles know (docs/sensors.md style).
PROFILE = {
    "model": "MIX-1",
    "max_gap": 0,
    "points": [
        {"name": "a", "fc": 4, "addr": 0, "type": "u16", "exp": -1, "unit": "mA", "kind": "leak"},
        {
            "name": "b",
            "fc": 4,
            "addr": 1,
            "type": "s16",
            "exp": -2,
            "unit": "degC",
            "kind": "temperature",
        },
        {"name": "c", "fc": 4, "addr": 2, "type": "u32", "exp": 0, "unit": "Wh", "kind": "energy"},
        {
            "name": "d",
            "fc": 4,
            "addr": 4,
            "type": "s32",
            "order": "CDAB",
            "exp": -3,
            "unit": "kW",
            "kind": "power",
        },
        {"name": "e", "fc": 4, "addr": 6, "type": "f32", "exp": 0, "unit": "V", "kind": "voltage"},
        {
            "name": "f",
            "fc": 4,
            "addr": 8,
            "type": "u16",
            "scale": 0.5,
            "offset": -20,
            "unit": "%RH",
            "kind": "humidity",
        },
        {"name": "g", "fc": 2, "addr": 0, "type": "bit", "unit": "", "kind": "contact"},
    ],
}
SITE = {
    "wiring": [{"unit": 1, "profile": "MIX-1", "name": "m"}],
    "profiles": [PROFILE],
    "sample": {"interval": 1},
}

words = st.integers(0, 0xFFFF)
image = st.tuples(*[words] * 9, st.integers(0, 1))


def expected(img):
    """(values, quality) decoded by hand from a register image."""
    w = img
    s16 = w[1] - 0x10000 if w[1] & 0x8000 else w[1]
    u32 = w[2] << 16 | w[3]
    d = w[5] << 16 | w[4]  # CDAB: low word first
    s32 = d - (1 << 32) if d & 0x80000000 else d
    f32 = struct.unpack(">f", struct.pack(">HH", w[6], w[7]))[0]
    values = [w[0], s16, u32, s32, f32, w[8] * 0.5 - 20, img[9]]
    quality = []
    if not math.isfinite(f32):
        values[4] = None
        quality = [[4, 2]]  # out_of_range
    return values, quality


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(image, min_size=1, max_size=8), st.sampled_from([0, 3, 60]))
def test_data_frames_carry_register_values_and_are_canonical(images, upload):
    rig = Rig("prop", site_over=SITE, cloud={"version": 1, "upload": upload})
    rig.boot()
    for img in images:
        regs = rig.slave1.tables
        regs[4] = dict(enumerate(img[:9]))
        regs[2] = {0: img[9]}
        rig.run(1)
    rig.agent.shutdown()  # the open batch goes to the outbox...
    rig.boot()  # ...and out after the reboot
    rig.run(2)
    got = []
    for topic, payload in rig.broker.published:
        frame = decode_frame(payload)
        assert frames.encode(frame) == payload  # canonical, byte for byte
        if frame["type"] == "data" and frame["boot"] == 1:
            assert topic.endswith("/up/data")
            for sample in frame["samples"]:
                values = sample["values"] + [None] * (7 - len(sample["values"]))
                got.append((values, sample.get("quality", [])))
    assert len(got) == len(images)
    for (values, quality), img in zip(got, images, strict=True):
        want_values, want_quality = expected(img)
        assert quality == want_quality
        for v, w in zip(values, want_values, strict=True):
            if isinstance(w, float):
                assert isinstance(v, float) and (v == w or math.isclose(v, w))
            else:
                assert v == w and type(v) is type(w)
