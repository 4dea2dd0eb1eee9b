"""Sensor profiles (edge/profiles.py): the docs/sensors.md maps, validation, plans, decoding.

Runs on CPython and MicroPython.
"""

import json

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


def test_builtin_models_and_codes_match_the_docs():
    t = table()
    codes = {}
    for model, p in t.items():
        codes[model] = p["code"]
    assert codes == {
        "IM-100": 0x1001,
        "PM-300": 0x2001,
        "PM-310": 0x2002,
        "TH-10": 0x3001,
        "DI-8": 0x4001,
    }
    assert profiles.MODEL_REGISTER == 9000 and profiles.FIRMWARE_REGISTER == 9001
    assert profiles.find_by_code(t, 0x2002)["model"] == "PM-310"
    assert profiles.find_by_code(t, 0x9999) is None


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


def test_builtin_profiles_are_json_data_and_fresh_copies():
    a = profiles.builtin_profiles()
    text = json.dumps(a)
    assert json.loads(text) == a
    a[0]["points"].clear()
    assert len(profiles.builtin_profiles()[0]["points"]) == 3


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


def test_builtin_plans_need_one_request_per_device():
    plans = {}
    for model, p in table().items():
        plans[model] = [(fc, addr, count) for fc, addr, count, _ in profiles.plan_reads(p)]
    assert plans == {
        "IM-100": [(4, 0, 3)],
        "PM-300": [(4, 0, 7)],
        "PM-310": [(4, 0, 7)],
        "TH-10": [(4, 0, 2)],
        "DI-8": [(2, 0, 8)],
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
    expect_error(site([pt("a", 0)], code=0x10000), ["'code'"])
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
    assert p["code"] is None and p["max_gap"] == profiles.DEFAULT_GAP
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


def test_site_profiles_join_the_table():
    extra = site([pt("a", 0)], code=0x7001)
    t = profiles.profile_table([extra])
    assert "XY-1" in t and "IM-100" in t
    assert profiles.find_by_code(t, 0x7001)["model"] == "XY-1"


def test_site_profile_clashing_with_builtin_is_refused():
    for bad, words in (
        ([{"model": "IM-100", "points": [pt("a", 0)]}], ["'IM-100'", "twice"]),
        ([site([pt("a", 0)], code=0x1001)], ["0x1001"]),
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
