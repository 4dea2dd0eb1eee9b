"""Sensor profiles (edge/profiles.py): the docs/sensors.md maps, validation, plans, decoding.

Runs on CPython and MicroPython.
"""

import json
import os
import struct

from edge import profiles
from edge.errors import ConfigError


def decode_all(profile, images):
    """Values of every point, reading ``images[fc][addr]`` through the read plan."""
    out = [None] * len(profile["points"])
    for fc, addr, count, items in profiles.plan_reads(profile):
        regs = [images[fc].get(a, 0) for a in range(addr, addr + count)]
        for item in items:
            out[item[0]] = profiles.decode_point(item, regs)
    return out


def table():
    return profiles.profile_table()


def fresh_dir(name):
    """An empty directory of its own (a temporary one where the platform has them)."""
    try:
        import tempfile
    except ImportError:  # MicroPython: in-memory filesystem, gone with the process
        n = 0
        while True:
            path = "/tmp/mm-profiles-%s-%d" % (name, n)
            try:
                os.mkdir(path)
                return path
            except OSError:
                n += 1
    return tempfile.mkdtemp(prefix="mm-profiles-%s-" % name)


def write(directory, name, obj):
    with open(directory + "/" + name, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def words_f32(x):
    w = struct.unpack(">HH", struct.pack(">f", x))
    return w[0], w[1]


def test_builtin_models_are_the_files_of_docs_sensors():
    assert sorted(table()) == [
        "DI-8",
        "IM-100",
        "KM-N1",
        "PM-300",
        "PM-310",
        "SDM120",
        "SDM630",
        "TH-10",
        "WS-IO8",
        "XY-MD02",
    ]
    assert profiles.models_in(profiles.BUILTIN_DIR) == sorted(table())


def test_only_the_models_asked_for_are_loaded():
    t = profiles.profile_table(None, ["SDM630", "NO-SUCH", "XY-MD02"])
    assert sorted(t) == ["SDM630", "XY-MD02"]


def test_the_terminal_keeps_only_what_it_polls_with():
    p = table()["SDM630"]
    assert sorted(p) == ["max_gap", "model", "points", "status"]
    assert p["points"][6] == {
        "name": "kw",
        "fc": 4,
        "addr": 52,
        "type": "f32",
        "exp": 0,
        "unit": "kW",
        "kind": "power",
        "order": "ABCD",
        "scale": 0.001,
        "offset": 0,
    }


def test_builtin_points_match_the_docs():
    t = table()
    rows = {}
    for model, p in t.items():
        rows[model] = [
            (
                q["name"],
                q["fc"],
                q["addr"],
                q["type"],
                q.get("order"),
                q["exp"],
                q["unit"],
                q["kind"],
            )
            for q in p["points"]
        ]
    assert rows["IM-100"] == [
        ("io", 4, 0, "u16", None, -1, "mA", "leak"),
        ("ior", 4, 1, "u16", None, -1, "mA", "leak"),
        ("v", 4, 2, "u16", None, -1, "V", "voltage"),
    ]
    assert rows["PM-300"] == [
        ("kw", 4, 0, "s32", "ABCD", -2, "kW", "power"),
        ("kwh", 4, 2, "u32", "ABCD", -1, "kWh", "energy"),
        ("v", 4, 4, "u16", None, -1, "V", "voltage"),
        ("a", 4, 5, "u16", None, -2, "A", "current"),
        ("pf", 4, 6, "s16", None, -3, "", "pf"),
    ]
    assert [r[:4] + r[5:] for r in rows["PM-310"]] == [r[:4] + r[5:] for r in rows["PM-300"]]
    assert [r[4] for r in rows["PM-310"]] == ["CDAB", "CDAB", None, None, None]
    assert rows["TH-10"] == [
        ("t", 4, 0, "s16", None, -1, "degC", "temperature"),
        ("rh", 4, 1, "u16", None, -1, "%RH", "humidity"),
    ]
    assert rows["DI-8"] == [
        ("di%d" % (i + 1), 2, i, "bit", None, 0, "", "contact") for i in range(8)
    ]
    assert rows["WS-IO8"] == [
        ("di%d" % (i + 1), 2, i, "bit", None, 0, "", "contact") for i in range(8)
    ]
    assert rows["XY-MD02"] == [
        ("t", 4, 1, "s16", None, -1, "degC", "temperature"),
        ("rh", 4, 2, "u16", None, -1, "%RH", "humidity"),
    ]
    assert rows["KM-N1"] == [
        ("v", 3, 0, "s32", "ABCD", -1, "V", "voltage"),
        ("a", 3, 6, "s32", "ABCD", -3, "A", "current"),
        ("pf", 3, 12, "s32", "ABCD", -2, "", "pf"),
        ("hz", 3, 14, "s32", "ABCD", -1, "Hz", "frequency"),
        ("kw", 3, 16, "s32", "ABCD", -4, "kW", "power"),
        ("kwh", 3, 512, "u32", "ABCD", -3, "kWh", "energy"),
    ]
    for model in ("SDM120", "SDM630"):
        assert {(r[1], r[3], r[4], r[5]) for r in rows[model]} == {(4, "f32", "ABCD", 0)}
    assert [(r[0], r[2]) for r in rows["SDM630"]] == [
        ("v1", 0),
        ("v2", 2),
        ("v3", 4),
        ("a1", 6),
        ("a2", 8),
        ("a3", 10),
        ("kw", 52),
        ("pf", 62),
        ("hz", 70),
        ("kwh", 72),
    ]
    assert [(r[0], r[2]) for r in rows["SDM120"]] == [
        ("v", 0),
        ("a", 6),
        ("kw", 12),
        ("pf", 30),
        ("hz", 70),
        ("kwh", 72),
    ]


def test_profiles_are_fresh_copies():
    a = table()
    a["IM-100"]["points"].clear()
    assert len(table()["IM-100"]["points"]) == 3


def test_sdm630_decodes_ieee_floats_and_watts_to_kw():
    p = table()["SDM630"]
    image = {}
    for addr, x in ((0, 230.5), (2, 229.0), (4, 231.25), (6, 12.5), (52, 8125.0), (62, -0.5)):
        image[addr], image[addr + 1] = words_f32(x)
    image[70], image[71] = words_f32(50.0)
    image[72], image[73] = words_f32(12345.5)
    values = decode_all(p, {4: image})
    assert values[:4] == [230.5, 229.0, 231.25, 12.5]
    assert abs(values[6] - 8.125) < 1e-9 and values[7] == -0.5
    assert values[8:] == [50.0, 12345.5]
    # every read stays on mapped registers (max_gap 0)
    plan = [(fc, addr, count) for fc, addr, count, _ in profiles.plan_reads(p)]
    assert plan == [(4, 0, 12), (4, 52, 2), (4, 62, 2), (4, 70, 4)]


def test_km_n1_decodes_signed_32_bit_holding_registers():
    p = table()["KM-N1"]
    # 101.3 V, 4.250 A, PF 0.95, 60.0 Hz, 432.1 W = 4321 x 0.1 W, 123456 Wh
    image = {0: 0, 1: 1013, 6: 0, 7: 4250, 12: 0, 13: 95, 14: 0, 15: 600, 16: 0, 17: 4321}
    image[512], image[513] = 0x0001, 0xE240
    assert decode_all(p, {3: image}) == [1013, 4250, 95, 600, 4321, 123456]
    image[12], image[13] = 0xFFFF, 0xFFA6  # PF -0.90 (leading)
    assert decode_all(p, {3: image})[2] == -90


def test_xy_md02_decodes_temperature_and_humidity():
    p = table()["XY-MD02"]
    assert decode_all(p, {4: {1: 0xFF33, 2: 546}}) == [-205, 546]  # -20.5 degC, 54.6 %RH


def test_im100_decodes():
    p = table()["IM-100"]
    assert decode_all(p, {4: {0: 253, 1: 12, 2: 2031}}) == [253, 12, 2031]


def test_pm300_decodes_signed_32_bit_high_word_first():
    p = table()["PM-300"]
    # kw -123.45 kW = -12345 = 0xFFFFCFC7; kwh 9876543.2 kWh = 98765432 = 0x05E30A78;
    # pf -0.875 = -875 = 0xFC95
    image = {0: 0xFFFF, 1: 0xCFC7, 2: 0x05E3, 3: 0x0A78, 4: 2031, 5: 4210, 6: 0xFC95}
    assert decode_all(p, {4: image}) == [-12345, 98765432, 2031, 4210, -875]
    image[0], image[1] = 0x7FFF, 0xFFFF  # largest positive s32
    image[2], image[3] = 0xFFFF, 0xFFFF  # largest u32
    image[6] = 0x7FFF
    assert decode_all(p, {4: image})[:2] == [2147483647, 4294967295]
    image[0], image[1] = 0x8000, 0x0000
    assert decode_all(p, {4: image})[0] == -2147483648


def test_pm310_decodes_word_swapped_32_bit():
    p = table()["PM-310"]
    # The same values as PM-300, low word first.
    image = {0: 0xCFC7, 1: 0xFFFF, 2: 0x0A78, 3: 0x05E3, 4: 2031, 5: 4210, 6: 0xFC95}
    assert decode_all(p, {4: image}) == [-12345, 98765432, 2031, 4210, -875]


def test_th10_decodes_negative_temperature():
    p = table()["TH-10"]
    assert decode_all(p, {4: {0: 0xFF9C, 1: 655}}) == [-100, 655]  # -10.0 degC, 65.5 %RH
    assert decode_all(p, {4: {0: 0x8000, 1: 0}}) == [-32768, 0]
    assert decode_all(p, {4: {0: 0x7FFF, 1: 1000}}) == [32767, 1000]


def test_di8_decodes_bits():
    p = table()["DI-8"]
    bits = {0: 1, 1: 0, 2: 0, 3: 1, 4: 1, 5: 0, 6: 0, 7: 1}
    assert decode_all(p, {2: bits}) == [1, 0, 0, 1, 1, 0, 0, 1]


def test_builtin_plans_need_few_requests_per_device():
    plans = {}
    for model, p in table().items():
        plans[model] = [(fc, addr, count) for fc, addr, count, _ in profiles.plan_reads(p)]
    assert plans == {
        "IM-100": [(4, 0, 3)],
        "PM-300": [(4, 0, 7)],
        "PM-310": [(4, 0, 7)],
        "TH-10": [(4, 0, 2)],
        "DI-8": [(2, 0, 8)],
        "KM-N1": [(3, 0, 18), (3, 512, 2)],
        "SDM120": [(4, 0, 2), (4, 6, 2), (4, 12, 2), (4, 30, 2), (4, 70, 4)],
        "SDM630": [(4, 0, 12), (4, 52, 2), (4, 62, 2), (4, 70, 4)],
        "WS-IO8": [(2, 0, 8)],
        "XY-MD02": [(4, 1, 2)],
    }


def site(points, **extra):
    p = {"model": "XY-1", "points": points}
    for k, v in extra.items():
        p[k] = v
    return p


def pt(name, addr, typ="u16", fc=3, **extra):
    p = {"name": name, "fc": fc, "addr": addr, "type": typ}
    for k, v in extra.items():
        p[k] = v
    return p


def test_all_32_bit_orders():
    # 0x11223344 sent as the four byte orders of the issue.
    wire = {
        "ABCD": (0x1122, 0x3344),
        "CDAB": (0x3344, 0x1122),
        "BADC": (0x2211, 0x4433),
        "DCBA": (0x4433, 0x2211),
    }
    for order, w in wire.items():
        p = profiles.validate_profile(site([pt("x", 10, "u32", order=order)]))
        assert decode_all(p, {3: {10: w[0], 11: w[1]}}) == [0x11223344], order
        p = profiles.validate_profile(site([pt("x", 10, "s32", order=order)]))
        neg = {
            "ABCD": (0xFFFF, 0xFFFE),
            "CDAB": (0xFFFE, 0xFFFF),
            "BADC": (0xFFFF, 0xFEFF),
            "DCBA": (0xFEFF, 0xFFFF),
        }[order]
        assert decode_all(p, {3: {10: neg[0], 11: neg[1]}}) == [-2], order


def test_f32_and_scaled_points():
    p = profiles.validate_profile(
        site(
            [
                pt("f", 0, "f32"),  # 0x41460000 = 12.375
                pt("fs", 2, "f32", order="CDAB"),  # -1.5 = 0xBFC00000 word swapped
                pt("k", 4, "u16", scale=0.5, offset=-10),
                pt("o", 5, "s16", offset=100),
            ]
        )
    )
    values = decode_all(p, {3: {0: 0x4146, 1: 0x0000, 2: 0x0000, 3: 0xBFC0, 4: 41, 5: 0xFFFF}})
    assert values[0] == 12.375 and values[1] == -1.5
    assert values[2] == 10.5 and isinstance(values[2], float)
    assert values[3] == 99


def test_plan_groups_contiguous_ranges_with_small_gaps():
    points = [
        pt("a", 0),
        pt("b", 3),  # gap 2: same request
        pt("c", 9),  # gap 5 > 4: new request
        pt("d", 10, "u32"),
        pt("i", 0, fc=4),
        pt("x", 200, "bit", fc=1),
        pt("y", 201, "bit", fc=1),
    ]
    p = profiles.validate_profile(site(points))
    plan = [
        (fc, addr, count, [i[0] for i in items])
        for fc, addr, count, items in profiles.plan_reads(p)
    ]
    assert plan == [
        (1, 200, 2, [5, 6]),
        (3, 0, 4, [0, 1]),
        (3, 9, 3, [2, 3]),
        (4, 0, 1, [4]),
    ]
    # max_gap 0 keeps reads off unmapped addresses.
    p = profiles.validate_profile(site(points, max_gap=0))
    plan = [(fc, addr, count) for fc, addr, count, _ in profiles.plan_reads(p)]
    assert (3, 0, 1) in plan and (3, 3, 1) in plan and (3, 9, 3) in plan


def test_plan_respects_125_register_and_2000_bit_limits():
    regs = [pt("r%d" % i, i) for i in range(0, 300, 2)]  # gaps of 1: all mergeable
    regs.append(pt("w", 123, "u32", fc=4))
    p = profiles.validate_profile(site(regs))
    plan = profiles.plan_reads(p)
    assert [(g[0], g[1], g[2]) for g in plan] == [
        (3, 0, 125),
        (3, 126, 125),
        (3, 252, 47),
        (4, 123, 2),
    ]
    for group in plan:
        for item in group[3]:
            # every point lies wholly inside its request
            assert item[2] + profiles.WIDTHS[item[1]] <= group[2]
    bits = [pt("b%d" % i, i, "bit", fc=2) for i in range(0, 4100, 30)]
    p = profiles.validate_profile(site(bits, max_gap=32))
    plan = profiles.plan_reads(p)
    assert [(g[1], g[2]) for g in plan] == [(0, 1981), (2010, 1981), (4020, 61)]
    assert sum(len(g[3]) for g in plan) == len(bits)


def test_reading_a_u32_at_the_125_register_boundary():
    points = [pt("r%d" % i, i) for i in range(124)] + [pt("w", 124, "u32")]
    p = profiles.validate_profile(site(points))
    plan = profiles.plan_reads(p)
    assert [(addr, count) for _, addr, count, _ in plan] == [(0, 124), (124, 2)]


def expect_error(profile, words):
    try:
        profiles.validate_profile(profile)
    except ConfigError as err:
        msg = str(err)
        for w in words:
            assert w in msg, (w, msg)
        return
    raise AssertionError("accepted %r" % (profile,))


def test_validation_names_model_point_and_problem():
    expect_error("nope", ["profile must be an object"])
    expect_error({"points": [pt("a", 0)]}, ["'model'"])
    expect_error(site([]), ["XY-1", "'points'"])
    expect_error(site([pt("a", 0)], cod=1), ["XY-1", "unknown key 'cod'"])
    expect_error(site([pt("a", 0)], code=0x1001), ["unknown key 'code'"])
    expect_error(site([pt("a", 0)], label=5), ["'label'"])
    expect_error({"model": "XY/1", "points": [pt("a", 0)]}, ["'model'", "A-Z"])
    expect_error(site([pt("a", 0)], max_gap=-1), ["'max_gap'"])
    expect_error(site([pt("a", 0, adr=1)]), ["'a'", "unknown key 'adr'"])
    expect_error(site([pt("a", 0, "u17")]), ["'a'", "'type'", "u17"])
    expect_error(site([pt("a", 0, fc=5)]), ["'a'", "'fc'"])
    expect_error(site([pt("a", 0, fc=True)]), ["'fc'"])
    expect_error(site([pt("a", 0, "bit", fc=3)]), ["'a'", "bit"])
    expect_error(site([pt("a", 0, "u16", fc=2)]), ["'a'", "bit"])
    expect_error(site([pt("a", 65535, "u32")]), ["'addr'"])
    expect_error(site([pt("a", -1)]), ["'addr'"])
    expect_error(site([pt("a", "0")]), ["'addr'"])
    expect_error(site([pt("a", 0, "u32", order="ABDC")]), ["'order'"])
    expect_error(site([pt("a", 0, "u16", order="CDAB")]), ["'order'", "32-bit"])
    expect_error(site([pt("a", 0, exp=12)]), ["'exp'"])
    expect_error(site([pt("a", 0, exp=-1, scale=0.1)]), ["'exp' must be 0"])
    expect_error(site([pt("a", 0, scale=0)]), ["'scale'"])
    expect_error(site([pt("a", 0, scale="2")]), ["'scale'"])
    expect_error(site([pt("a", 0, "bit", fc=1, scale=2)]), ["bits"])
    expect_error(site([pt("a", 0, unit=5)]), ["'unit'"])
    expect_error(site([pt("a", 0), pt("a", 1)]), ["duplicate point name 'a'"])
    expect_error(site([pt("", 0)]), ["'name'"])
    expect_error(site(["a"]), ["point 0"])


def test_validation_fills_defaults_and_keeps_input():
    raw = site([pt("a", 0), pt("b", 1, "s32")])
    text = json.dumps(raw)
    p = profiles.validate_profile(raw)
    assert json.dumps(raw) == text
    assert p["max_gap"] == profiles.DEFAULT_GAP and sorted(p) == ["max_gap", "model", "points"]
    assert p["points"][0] == {
        "name": "a",
        "fc": 3,
        "addr": 0,
        "type": "u16",
        "exp": 0,
        "unit": "",
        "kind": "",
    }
    assert p["points"][1]["order"] == "ABCD"


def test_installer_keys_are_accepted_and_dropped():
    raw = site(
        [pt("a", 0, label="a thing", range=[0, 10])],
        label="XY",
        status="documented",
        source="a data sheet",
        baud=19200,
        ident=[{"name": "address", "fc": 3, "addr": 1, "type": "u16", "expect": "unit"}],
        mei={"product": "XY-1"},
    )
    p = profiles.validate_profile(raw)
    assert sorted(p) == ["max_gap", "model", "points"]
    assert "label" not in p["points"][0] and "range" not in p["points"][0]


def test_site_profiles_join_the_table():
    extra = site([pt("a", 0)])
    t = profiles.profile_table([extra])
    assert "XY-1" in t and "IM-100" in t
    assert profiles.profile_table([extra], ["XY-1"]) == {"XY-1": t["XY-1"]}


def test_each_profile_carries_the_status_its_birth_reports():
    # Shipped files say their own status; whatever the site supplies is "site",
    # even when its file claims "documented" (nobody here checked that map).
    t = table()
    assert t["SDM120"]["status"] == "documented"
    assert t["IM-100"]["status"] == "reference"
    assert t["PM-300"]["status"] == "test" and t["DI-8"]["status"] == "test"
    d = fresh_dir("claims")
    claim = {"model": "XY-C", "status": "documented", "points": [pt("t", 1, "s16", fc=4)]}
    write(d, "XY-C.json", claim)
    inline = site([pt("a", 0)])
    got = profiles.profile_table([inline], ["XY-C", "XY-1", "IM-100"], d)
    assert got["XY-C"]["status"] == "site" and got["XY-1"]["status"] == "site"
    assert got["IM-100"]["status"] == "reference"


def test_site_profile_files_are_found_by_model_name():
    d = fresh_dir("site")
    write(d, "XY-X100.json", {"model": "XY-X100", "points": [pt("t", 1, "s16", fc=4, exp=-2)]})
    write(d, "README.txt", "not a profile")
    t = profiles.profile_table([], ["XY-X100", "SDM630"], d)
    assert sorted(t) == ["SDM630", "XY-X100"]
    assert t["XY-X100"]["points"][0]["exp"] == -2
    assert profiles.models_in(d) == ["XY-X100"]
    assert "XY-X100" in profiles.profile_table(None, None, d)
    assert profiles.models_in(d + "/missing") == []


def expect_table_error(words, inline=None, models=None, site_dir=None):
    try:
        profiles.profile_table(inline, models, site_dir)
    except ConfigError as err:
        for w in words:
            assert w in str(err), (w, str(err))
        return
    raise AssertionError("accepted %r %r" % (inline, models))


def test_bad_site_profile_files_are_refused_with_the_file_named():
    d = fresh_dir("bad")
    write(d, "BROKEN.json", '{"model": "BROKEN", "points": [')
    expect_table_error(["BROKEN.json", "not valid JSON"], None, ["BROKEN"], d)
    write(d, "LIST.json", "[1, 2]")
    expect_table_error(["LIST.json", "one JSON object"], None, ["LIST"], d)
    write(d, "NAMED.json", {"model": "OTHER", "points": [pt("a", 0)]})
    expect_table_error(["NAMED.json", "'OTHER'", "file name"], None, ["NAMED"], d)
    write(d, "SDM630.json", {"model": "SDM630", "points": [pt("a", 0)]})
    expect_table_error(["'SDM630'", "built in"], None, ["SDM630"], d)
    write(d, "TWICE.json", {"model": "TWICE", "points": [pt("a", 0)]})
    inline = [{"model": "TWICE", "points": [pt("b", 0)]}]
    expect_table_error(["'TWICE'", "twice"], inline, ["TWICE"], d)
    write(d, "BADPT.json", {"model": "BADPT", "points": [pt("a", 0, "u99")]})
    expect_table_error(["'BADPT'", "u99"], None, ["BADPT"], d)


def test_site_profile_clashing_with_builtin_is_refused():
    for bad, words in (
        ([{"model": "IM-100", "points": [pt("a", 0)]}], ["'IM-100'", "built in"]),
        ([site([pt("a", 0)]), site([pt("b", 0)])], ["'XY-1'", "twice"]),
        ("not a list", ["list"]),
        ([site([pt("a", 0, "u99")])], ["u99"]),
    ):
        try:
            profiles.profile_table(bad)
        except ConfigError as err:
            for w in words:
                assert w in str(err), (w, str(err))
            continue
        raise AssertionError("accepted %r" % (bad,))
