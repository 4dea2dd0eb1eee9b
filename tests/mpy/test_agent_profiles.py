"""Agent: sensor profiles from the site's files and the documented built-in maps.

Runs under CPython (pytest) and real MicroPython. The site configuration
reaches the terminal as files: ``site.json`` and, for a model the terminal
does not have built in, ``profiles/<MODEL>.json`` beside it (what
``mimamori-install flash`` writes). The agent must load that file, poll with
it and announce its channels, and load nothing the wiring does not name.
"""

import json
import os
import struct

from test_agent_fakes import Rig

from edge.agent import Agent
from edge.errors import ConfigError
from edge.fakelink import FakeSlave
from protocol import frames

# An XY-MD02 batch that sends hundredths: a site-added variant of the built-in map.
X100 = {
    "model": "XY-MD02-X100",
    "label": "XY-MD02, 0.01 resolution",
    "source": "measured on site",
    "ident": [{"name": "address", "fc": 3, "addr": 257, "type": "u16", "expect": "unit"}],
    "points": [
        {"name": "t", "fc": 4, "addr": 1, "type": "s16", "exp": -2, "unit": "degC",
         "kind": "temperature"},
        {"name": "rh", "fc": 4, "addr": 2, "type": "u16", "exp": -2, "unit": "%RH",
         "kind": "humidity", "range": [0, 100]},
    ],
}  # fmt: skip


def f32_words(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return hi, lo


def profile_file(rig, name, content):
    directory = rig.dir + "/profiles"
    try:
        os.mkdir(directory)
    except OSError:
        pass
    with open(directory + "/" + name, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


def rig_with(name, wiring, cloud=None):
    return Rig(name, site_over={"wiring": wiring}, cloud=cloud)


def test_a_profile_file_added_at_the_site_is_polled_and_announced():
    wiring = [
        {"unit": 1, "profile": "IM-100", "name": "leak1"},
        {"unit": 3, "profile": "XY-MD02-X100", "name": "room"},
    ]
    cloud = {
        "version": 2,
        "upload": 0,
        "thresholds": [{"channel": "room.t", "cond": "hi", "warn": 28, "alarm": 35}],
    }
    rig = rig_with("x100", wiring, cloud)
    profile_file(rig, "XY-MD02-X100.json", X100)
    # a broken file of a model nobody wires: never read
    profile_file(rig, "UNUSED.json", "{not json")
    rig.link.slaves.append(FakeSlave(3, inputs={1: 3050, 2: 5530}, holding={257: 3}))
    rig.boot()
    rig.run(12)
    birth = rig.broker.frames("birth")[0]
    assert [(c["name"], c["unit"], c["kind"], c["exp"]) for c in birth["channels"]] == [
        ("leak1.io", "mA", "leak", -1),
        ("leak1.ior", "mA", "leak", -1),
        ("leak1.v", "V", "voltage", -1),
        ("room.t", "degC", "temperature", -2),
        ("room.rh", "%RH", "humidity", -2),
    ]
    # the birth says which profile each device runs and how far to trust its map
    assert birth["devices"] == [
        {"name": "leak1", "model": "IM-100", "status": "reference"},
        {"name": "room", "model": "XY-MD02-X100", "status": "site"},
    ]
    data = rig.broker.frames("data")
    assert data and data[0]["samples"][0]["values"][3:] == [3050, 5530]
    # 30.50 degC is above the warning level the cloud set on the file's channel
    alarms = rig.broker.frames("alarm")
    assert [(a["alias"], a["level"]) for a in alarms] == [(3, frames.WARNING)]
    # a new configuration from the cloud is checked against the file's channels too
    rig.config(3, upload=0, thresholds=[{"channel": "room.rh", "cond": "lo", "alarm": 60}])
    rig.run(12)
    acks = rig.broker.frames("cfgack")
    assert [(a["version"], a["ok"], a["reason"]) for a in acks] == [(3, True, "applied")]
    alarms = [(a["alias"], a["level"], a["state"]) for a in rig.broker.frames("alarm")]
    assert alarms[1:] == [(3, frames.WARNING, "cleared"), (4, frames.ALARM, "raised")]


def test_a_documented_float_meter_is_polled_with_its_built_in_profile():
    wiring = [{"unit": 5, "profile": "SDM630", "name": "main"}]
    rig = rig_with("sdm630", wiring, {"version": 1, "upload": 0})
    image = {}
    for addr, x in ((0, 101.5), (2, 102.0), (4, 100.25), (6, 12.5), (8, 12.0), (10, 13.0)):
        image[addr], image[addr + 1] = f32_words(x)
    for addr, x in ((52, 4200.0), (62, 0.875), (70, 60.0), (72, 12345.5)):
        image[addr], image[addr + 1] = f32_words(x)
    rig.link.slaves.append(FakeSlave(5, inputs=image))
    rig.boot()
    rig.run(12)
    birth = rig.broker.frames("birth")[0]
    names = [c["name"] for c in birth["channels"]]
    points = ("v1", "v2", "v3", "a1", "a2", "a3", "kw", "pf", "hz", "kwh")
    assert names == ["main." + n for n in points]
    assert [c["kind"] for c in birth["channels"]][6:] == ["power", "pf", "other", "energy"]
    values = rig.broker.frames("data")[0]["samples"][0]["values"]
    assert values[:6] == [101.5, 102.0, 100.25, 12.5, 12.0, 13.0]
    assert abs(values[6] - 4.2) < 1e-6 and values[7:] == [0.875, 60.0, 12345.5]


def expect_boot_error(rig, words):
    try:
        Agent(rig.hal, rig.dir)
    except ConfigError as err:
        for w in words:
            assert w in str(err), (w, str(err))
        return
    raise AssertionError("the agent booted")


def test_a_bad_site_profile_file_stops_the_boot_with_the_file_named():
    wiring = [{"unit": 3, "profile": "XY-MD02-X100", "name": "room"}]
    rig = rig_with("badfile", wiring)
    bad = dict(X100)
    bad["points"] = [dict(X100["points"][0], type="u17")]
    profile_file(rig, "XY-MD02-X100.json", bad)
    expect_boot_error(rig, ["XY-MD02-X100", "u17"])
    profile_file(rig, "XY-MD02-X100.json", "[")
    expect_boot_error(rig, ["profiles/XY-MD02-X100.json", "not valid JSON"])
    profile_file(rig, "XY-MD02-X100.json", dict(X100, model="OTHER"))
    expect_boot_error(rig, ["XY-MD02-X100.json", "'OTHER'", "file name"])
    os.remove(rig.dir + "/profiles/XY-MD02-X100.json")
    expect_boot_error(rig, ["wiring[0].profile", "unknown sensor profile"])


def test_a_profile_file_broken_after_boot_refuses_the_next_config_frame():
    wiring = [{"unit": 3, "profile": "XY-MD02-X100", "name": "room"}]
    rig = rig_with("brokenlater", wiring, {"version": 1, "upload": 0})
    profile_file(rig, "XY-MD02-X100.json", X100)
    rig.link.slaves.append(FakeSlave(3, inputs={1: 2050, 2: 5530}))
    rig.boot()
    rig.run(2)
    profile_file(rig, "XY-MD02-X100.json", "[")
    rig.config(2, upload=0, heartbeat=60)
    rig.run(11)
    acks = [(a["version"], a["ok"], a["reason"]) for a in rig.broker.frames("cfgack")]
    assert [a[:2] for a in acks] == [(2, False)]
    assert acks[0][2].startswith("site.profiles: ")
    assert acks[0][2].endswith("/profiles/XY-MD02-X100.json: not valid JSON")
    assert rig.agent.heartbeat == 300 and rig.agent.config["cloud"]["version"] == 1
    assert len(rig.broker.frames("data")) >= 2  # still sampling with the boot's profile
    assert "internal" not in rig.agent.errors


def test_a_site_file_may_not_shadow_a_built_in_profile():
    rig = rig_with("shadow", [{"unit": 5, "profile": "SDM630", "name": "main"}])
    profile_file(rig, "SDM630.json", dict(X100, model="SDM630"))
    expect_boot_error(rig, ["'SDM630'", "built in"])
