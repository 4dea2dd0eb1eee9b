"""Terminal configuration: runs under CPython (pytest) and real MicroPython.

Channels come from the real sensor profiles (edge/profiles.py, the maps of
docs/sensors.md).
"""

import json
import os
import time

from edge.config import ConfigStore, aliases, channels, default_cloud, validate
from edge.errors import ConfigError

SECRET = "s3cret-pw"


def fresh_dir(name):
    """An empty directory of its own; removed at exit where the platform can."""
    try:
        import atexit
        import shutil
        import tempfile
    except ImportError:  # MicroPython: in-memory filesystem, gone with the process
        stamp = time.ticks_ms()
        n = 0
        while True:
            path = "/tmp/mm-config-%s-%d-%d" % (name, stamp, n)
            try:
                os.mkdir(path)
                return path
            except OSError:
                n += 1
    path = tempfile.mkdtemp(prefix="mm-config-%s-" % name)
    atexit.register(shutil.rmtree, path, True)
    return path


def site(**over):
    s = {
        "terminal_id": "T0001",
        "broker": {"host": "mqtt.example.net", "port": 8883, "tls": True},
        "credentials": {"username": "T0001", "password": SECRET},
        "wiring": [
            {"unit": 1, "profile": "IM-100", "name": "leak1"},
            {"unit": 3, "profile": "TH-10", "name": "room"},
            {"unit": 4, "profile": "DI-8", "name": "di"},
        ],
    }
    s.update(over)
    return s


def cloud(version=1, **over):
    c = {
        "version": version,
        "sampling": {"leak1.ior": 10},
        "thresholds": [
            {
                "channel": "leak1.ior",
                "cond": "leak",
                "warn": 30,
                "alarm": 50,
                "hyst": 2,
                "on_delay": 600,
                "count": 3,
                "window": 3600,
            },
            {
                "channel": "room.t",
                "cond": "hi",
                "warn": 35.0,
                "alarm": 40.0,
                "override": {"warn": 38.0, "until": 1767225600},
            },
            {"channel": "room.t", "cond": "lo", "alarm": 5},
            {"channel": "di.di1", "cond": "contact", "alarm": 1, "on_delay": 5},
        ],
    }
    c.update(over)
    return c


def error_of(cfg):
    try:
        validate(cfg)
    except ConfigError as err:
        assert SECRET not in str(err)
        return str(err)
    raise AssertionError("accepted: %r" % (cfg,))


def test_site_defaults_and_stable_aliases():
    cfg = validate({"site": site()})
    s = cfg["site"]
    assert s["broker"] == {"host": "mqtt.example.net", "port": 8883, "tls": True}
    assert s["sample"] == {"interval": 60, "unreachable_after": 3}
    assert s["bus"]["baud"] == 9600 and s["clock"]["max_age"] == 86400
    assert s["outbox"] == {"budget": 65536}
    assert cfg["cloud"] == default_cloud()
    chans = channels(s)
    names = [c[1] for c in chans]
    assert names[:6] == ["leak1.io", "leak1.ior", "leak1.v", "room.t", "room.rh", "di.di1"]
    assert [c[0] for c in chans] == list(range(13))
    assert chans[3] == (3, "room.t", "temperature", 1, "t")
    assert aliases(s)["di.di8"] == 12
    # the same site always gives the same aliases
    assert channels(validate({"site": site()})["site"]) == chans


def test_installer_site_file_is_accepted():
    # the example of edge/installer/siteconfig.py: "model", no names, port default
    s = {
        "terminal_id": "T0001",
        "broker": {"host": "h", "tls": False},
        "credentials": {"password": SECRET},
        "wiring": [{"unit": 1, "model": "IM-100"}, {"unit": 2, "model": "PM-300"}],
    }
    out = validate({"site": s})["site"]
    assert out["broker"]["port"] == 1883
    assert out["credentials"]["username"] == "T0001"
    assert out["wiring"][1] == {"unit": 2, "profile": "PM-300", "name": "u2"}
    assert aliases(out)["u2.kw"] == 3


def test_cloud_part_normalized():
    c = validate({"site": site(), "cloud": cloud()})["cloud"]
    assert c["heartbeat"] == 300 and c["upload"] == 60
    leak, hi, lo, contact = c["thresholds"]
    assert leak["off_delay"] == 0 and leak["override"] is None
    assert hi["override"] == {"warn": 38.0, "alarm": None, "until": 1767225600}
    assert lo["warn"] is None and lo["alarm"] == 5
    assert contact["count"] is None and contact["hyst"] == 0
    # a normalized configuration is its own normal form
    cfg = validate({"site": site(), "cloud": cloud()})
    assert validate(cfg) == cfg


def test_precise_errors():
    def with_threshold(i, **kw):
        c = cloud()
        c["thresholds"][i] = dict(c["thresholds"][i], **kw)
        return {"site": site(), "cloud": c}

    cases = [
        (with_threshold(2, warn="7"), "cloud.thresholds[2].warn: must be a number"),
        (with_threshold(2, warn=True), "cloud.thresholds[2].warn: must be a number"),
        (with_threshold(0, colour=1), "cloud.thresholds[0].colour: unknown key"),
        (
            with_threshold(0, channel="leak9.ior"),
            "cloud.thresholds[0].channel: no such channel in the wiring",
        ),
        (
            with_threshold(3, cond="hi"),
            "cloud.thresholds[3].cond: hi does not apply to a contact channel",
        ),
        (
            with_threshold(0, cond="contact"),
            "cloud.thresholds[0].cond: contact does not apply to a leak channel",
        ),
        (with_threshold(1, warn=45.0), "cloud.thresholds[1].warn: must be <= alarm"),
        (
            with_threshold(2, warn=1),
            "cloud.thresholds[2].warn: must be >= alarm for a lo condition",
        ),
        (with_threshold(0, window=0), "cloud.thresholds[0].window: must be an integer 1..604800"),
        (
            with_threshold(0, window=None),
            "cloud.thresholds[0].window: count and window go together",
        ),
        (
            with_threshold(1, count=3, window=60),
            "cloud.thresholds[1].count: count and window apply to leak only",
        ),
        (
            with_threshold(1, override={"warn": 41.0, "until": 5}),
            "cloud.thresholds[1].override.warn: must be <= alarm",
        ),
        (
            with_threshold(2, override={"warn": 9, "until": 5}),
            "cloud.thresholds[2].override.warn: the rule has no warn level to override",
        ),
        (with_threshold(3, alarm=2), "cloud.thresholds[3].alarm: must be the contact state 0 or 1"),
        (
            with_threshold(1, on_delay=-1),
            "cloud.thresholds[1].on_delay: must be an integer 0..86400",
        ),
        (with_threshold(1, warn=None, alarm=None), "cloud.thresholds[1]: needs warn or alarm"),
        (
            with_threshold(1, cond="lo", warn=50, alarm=40, override=None),
            "cloud.thresholds[2]: a second lo rule for room.t",
        ),
        (
            {"site": site(), "cloud": cloud(version=-1)},
            "cloud.version: must be an integer 0..4294967295",
        ),
        (
            {"site": site(), "cloud": cloud(sampling={"x.y": 5})},
            "cloud.sampling.x.y: no such channel in the wiring",
        ),
        (
            {"site": site(), "cloud": cloud(heartbeat=1)},
            "cloud.heartbeat: must be an integer 10..86400",
        ),
        ({"site": site(broker={"port": 1883})}, "site.broker.host: is required"),
        ({"site": site(terminal_id="T 1")}, "site.terminal_id: may only contain A-Z a-z 0-9 _ -"),
        (
            {"site": site(credentials={"username": "T0002", "password": SECRET})},
            "site.credentials.username: must equal terminal_id",
        ),
        (
            {"site": site(credentials={"password": 5})},
            "site.credentials.password: must be a string of 0..255 characters",
        ),
        (
            {
                "site": site(
                    wiring=[{"unit": 1, "profile": "IM-100"}, {"unit": 1, "profile": "TH-10"}]
                )
            },
            "site.wiring[1].unit: unit 1 is wired twice",
        ),
        (
            {"site": site(wiring=[{"unit": 1, "profile": "XX-1"}])},
            "site.wiring[0].profile: unknown sensor profile",
        ),
        (
            {"site": site(wiring=[{"unit": u, "profile": "DI-8"} for u in range(1, 10)])},
            "site.wiring: 72 channels, at most 64",
        ),
        ({"site": site(), "extra": 1}, "extra: unknown key"),
        ({"site": site(bus={"parity": "X"})}, "site.bus.parity: must be one of N, E, O"),
    ]
    for cfg, expected in cases:
        assert error_of(cfg) == expected, (error_of(cfg), expected)


def test_store_save_load_and_apply_cloud():
    d = fresh_dir("store")
    store = ConfigStore(d)
    try:
        store.load()
    except ConfigError as err:
        assert "no site configuration" in str(err)
    else:
        raise AssertionError("loaded nothing")
    store.save({"site": site()})
    assert ConfigStore(d).load()["cloud"]["version"] == 0
    assert store.apply_cloud(cloud(version=3)) == (True, "applied")
    again = ConfigStore(d).load()
    assert again["cloud"]["version"] == 3
    assert again["cloud"]["thresholds"][0]["count"] == 3
    # the config frame carries the version beside the tree
    tree = cloud()
    del tree["version"]
    assert store.apply_cloud(tree, version=4) == (True, "applied")
    assert store.apply_cloud(tree, version=4) == (True, "unchanged")  # retained redelivery
    assert ConfigStore(d).load()["cloud"]["version"] == 4


def test_a_resumed_store_applies_as_the_one_that_loaded():
    # a terminal keeps the configuration, not the store, between config frames;
    # a site profile file must still be found for the new cloud part
    d = fresh_dir("resume")
    os.mkdir(d + "/profiles")
    xy = {"model": "XY-2", "points": [{"name": "flow", "fc": 4, "addr": 0, "type": "u16",
                                       "kind": "other"}]}  # fmt: skip
    with open(d + "/profiles/XY-2.json", "w") as f:
        f.write(json.dumps(xy))
    wiring = [{"unit": 9, "profile": "XY-2", "name": "pump"}]
    ConfigStore(d).save({"site": site(wiring=wiring), "cloud": {"version": 2}})
    kept = ConfigStore(d).load()
    store = ConfigStore(d)
    store.resume(kept)
    assert store.config is kept
    rule = {"channel": "pump.flow", "cond": "lo", "warn": 2.0}
    assert store.apply_cloud({"version": 3, "thresholds": [rule]}) == (True, "applied")
    assert store.apply_cloud({"version": 3}) == (
        False,
        "stale: version 3 is in force with other content",
    )
    assert ConfigStore(d).load() == store.config


def test_rejected_cloud_config_keeps_the_old_one():
    d = fresh_dir("reject")
    store = ConfigStore(d)
    store.save({"site": site(), "cloud": cloud(version=5)})
    bad = cloud(version=6)
    bad["thresholds"][2]["warn"] = "x"
    ok, reason = store.apply_cloud(bad)
    assert not ok and reason == "thresholds[2].warn: must be a number"
    ok, reason = store.apply_cloud(cloud(version=4))
    assert not ok and reason.startswith("stale: version 4")
    ok, reason = store.apply_cloud(cloud(version=5, heartbeat=60))
    assert not ok and reason.startswith("stale: version 5")
    assert store.config["cloud"]["version"] == 5
    assert ConfigStore(d).load()["cloud"] == store.config["cloud"]
    assert store.apply_cloud("nonsense", version=7)[0] is False


def test_torn_write_leaves_the_old_config_in_force():
    d = fresh_dir("torn")
    store = ConfigStore(d)
    store.save({"site": site(), "cloud": cloud(version=2)})
    # a power cut while writing the temp file of a newer version
    text = json.dumps(validate({"site": site(), "cloud": cloud(version=3)})["cloud"])
    with open(d + "/cloud.json.tmp", "w") as f:
        f.write(text[: len(text) // 2])
    assert ConfigStore(d).load()["cloud"]["version"] == 2
    # and the next apply replaces the debris
    assert store.apply_cloud(cloud(version=3)) == (True, "applied")
    assert ConfigStore(d).load()["cloud"]["version"] == 3


def test_lone_complete_temp_file_is_used():
    # FAT: the old file was removed, the complete temp not yet renamed
    d = fresh_dir("fat")
    store = ConfigStore(d)
    store.save({"site": site(), "cloud": cloud(version=2)})
    os.rename(d + "/cloud.json", d + "/cloud.json.tmp")
    assert ConfigStore(d).load()["cloud"]["version"] == 2


def test_rewired_site_drops_a_cloud_part_that_no_longer_fits():
    d = fresh_dir("rewire")
    store = ConfigStore(d)
    store.save({"site": site(), "cloud": cloud(version=2)})
    with open(d + "/site.json", "w") as f:
        f.write(json.dumps(site(wiring=[{"unit": 1, "profile": "IM-100", "name": "leak1"}])))
    store = ConfigStore(d)
    cfg = store.load()
    assert cfg["cloud"] == default_cloud()
    assert "room.t" in store.warning or "no such channel" in store.warning
    assert store.apply_cloud(cloud(version=3, thresholds=[], sampling={})) == (True, "applied")


def test_corrupt_site_file_is_a_clear_error():
    d = fresh_dir("corrupt")
    with open(d + "/site.json", "w") as f:
        f.write('{"terminal_id": "T0001", "broker": ')
    try:
        ConfigStore(d).load()
    except ConfigError as err:
        assert str(err).endswith("site.json: not valid JSON")
    else:
        raise AssertionError("loaded a torn site file")


def test_site_profiles_add_models():
    xy = {
        "model": "XY-1",
        "points": [
            {
                "name": "flow",
                "fc": 4,
                "addr": 0,
                "type": "u16",
                "exp": -1,
                "unit": "m3/h",
                "kind": "other",
            }
        ],
    }
    cfg = validate(
        {
            "site": site(profiles=[xy], wiring=[{"unit": 9, "profile": "XY-1", "name": "pump"}]),
            "cloud": {
                "version": 1,
                "thresholds": [{"channel": "pump.flow", "cond": "lo", "warn": 2.0}],
            },
        }
    )
    assert aliases(cfg["site"]) == {"pump.flow": 0}
    assert validate(cfg) == cfg
    bad = dict(xy, points=[])
    msg = error_of({"site": site(profiles=[bad])})
    assert msg.startswith("site.profiles: "), msg
    assert error_of({"site": site(profiles={"model": "x"})}) == "site.profiles: must be a list"


def test_save_leaves_an_unchanged_site_file_byte_for_byte():
    d = fresh_dir("bytes")
    raw = json.dumps(site(wiring=[{"unit": 1, "model": "IM-100"}]))
    with open(d + "/site.json", "w") as f:
        f.write(raw)
    store = ConfigStore(d)
    cfg = store.load()
    store.save({"site": cfg["site"], "cloud": cloud(version=1, sampling={}, thresholds=[])})
    with open(d + "/site.json") as f:
        assert f.read() == raw
    assert ConfigStore(d).load()["cloud"]["version"] == 1
