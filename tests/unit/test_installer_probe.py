"""Probe evidence and verdicts on the terminal's Modbus master over the in-process line (FakeLink).

The devices here are FakeSlaves holding exactly the registers a device
documents, so each test shows which evidence makes which verdict.
"""

from __future__ import annotations

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse

from edge import bus
from edge.fakelink import FakeLink, FakeSlave
from edge.installer import probe, profilefile


def prober(*slaves, timeout_ms: int = 100, extra=None) -> tuple[probe.Prober, FakeLink]:
    link = FakeLink(*slaves)
    master = bus.Bus(link, link.ticks_ms, sleep_ms=link.sleep_ms, timeout_ms=timeout_ms, retries=0)
    return probe.Prober(master, link, profilefile.catalogue(extra), 9600), link


def im100(unit: int) -> FakeSlave:
    return FakeSlave(unit, holding={9000: 0x1001, 9001: 0x0100}, inputs={0: 182, 1: 13, 2: 2013})


def xy_md02(unit: int, t: int = 215, rh: int = 553, address: int | None = None) -> FakeSlave:
    """An XY-MD02: data registers 1-2, parameter registers 0x0101-0x0102 (docs/sensors.md)."""
    return FakeSlave(
        unit,
        holding={0x0101: unit if address is None else address, 0x0102: 9600},
        inputs={1: t, 2: rh},
    )


def x100() -> dict:
    raw = profilefile.read(profilefile.profiles.BUILTIN_DIR + "/XY-MD02.json")
    raw = dict(raw, model="XY-MD02-X100", status="documented")
    raw["points"] = [dict(p, exp=-2) for p in raw["points"]]
    return profilefile.check(raw)


def evidence(candidate: probe.Candidate) -> str:
    return "; ".join(e.text for e in candidate.evidence if e.text)


def test_a_test_device_is_identified_by_its_documented_model_register() -> None:
    p, _ = prober(im100(3))
    hit = p.probe_unit(3)
    assert hit is not None and (hit.verdict, hit.model) == (probe.IDENTIFIED, "IM-100")
    assert hit.best is not None and hit.best.reading == ["io=18.2 mA", "ior=1.3 mA", "v=201.3 V"]
    assert "model = 4097" in evidence(hit.best)
    # TH-10's model register would hold 0x3001: the same register contradicts it
    th10 = next(c for c in hit.candidates if c.model == "TH-10")
    assert th10.contradicted and "model (FC 3 @9000) = 4097, not 12289" in evidence(th10)


def test_a_documented_device_is_identified_by_its_own_address_and_baud_registers() -> None:
    p, _ = prober(xy_md02(5))
    hit = p.probe_unit(5)
    assert hit is not None and (hit.verdict, hit.model) == (probe.IDENTIFIED, "XY-MD02")
    assert hit.best is not None
    assert evidence(hit.best) == (
        "address = 5, the unit id; baud = 9600, the code of 9600 baud; 2 of 2 points plausible"
    )
    assert hit.best.reading == ["t=21.5 degC", "rh=55.3 %RH"]
    assert probe.describe(hit) == "XY-MD02, identified by its identification registers"


def test_a_variant_with_another_scale_is_a_visible_guess_not_an_identification() -> None:
    # the same registers, but this batch sends hundredths (30.50 degC as 3050)
    p, _ = prober(xy_md02(5, t=3050, rh=5530))
    hit = p.probe_unit(5)
    assert hit is not None and (hit.verdict, hit.model) == (probe.GUESS, "XY-MD02")
    assert hit.best is not None
    text = evidence(hit.best)
    assert "t=305.0 degC outside -40..125" in text and "rh=553.0 %RH outside 0..100" in text
    assert "its registers say XY-MD02, but 2 readings do not fit" in probe.describe(hit)
    assert "confirm by hand" in probe.describe(hit)
    # with the site's variant profile (same registers, hundredths) the readings fit
    p, _ = prober(xy_md02(5, t=3050, rh=5530), extra=[x100()])
    hit = p.probe_unit(5)
    assert hit is not None and (hit.verdict, hit.model) == (probe.IDENTIFIED, "XY-MD02-X100")
    assert hit.best is not None and hit.best.reading == ["t=30.50 degC", "rh=55.30 %RH"]


def test_a_register_that_contradicts_the_map_leaves_the_device_unknown() -> None:
    # says it is unit 9 while answering as unit 5: not what an XY-MD02 does
    p, _ = prober(xy_md02(5, address=9))
    hit = p.probe_unit(5)
    assert hit is not None and hit.verdict == probe.UNKNOWN and hit.model == ""
    xy = next(c for c in hit.candidates if c.model == "XY-MD02")
    assert xy.contradicted and "address (FC 3 @257) = 9, not 5" in evidence(xy)
    assert probe.describe(hit) == "answers, but no profile fits (unknown device)"


def test_read_device_identification_is_definitive() -> None:
    framer = FramerRTU(DecodePDU(True))
    device = im100(7)

    def with_identification(request: bytes) -> bytes | None:
        if request[:2] == bytes([7, 0x2B]):
            info = {0: b"mimamori", 1: b"IM-100", 2: b"1.00"}
            return framer.buildFrame(ReadDeviceInformationResponse(1, info, dev_id=7))
        return device(request)

    p, _ = prober(with_identification)
    assert p.device_identification(7) == ("ok", {0: "mimamori", 1: "IM-100", 2: "1.00"})
    hit = p.probe_unit(7)
    assert hit is not None and hit.best is not None
    assert "FC 43 product code 'IM-100'" in evidence(hit.best)
    pm300 = next(c for c in hit.candidates if c.model == "PM-300")
    assert "model (FC 3 @9000) = 4097, not 8193" in evidence(pm300)


def test_silence_is_nobody_and_costs_one_timeout_per_presence_question() -> None:
    p, link = prober(im100(3), timeout_ms=100)
    before = link.ticks_ms()
    assert p.probe_unit(4) is None
    questions = 1 + len(p._presence)  # FC 43, then the first register of each profile
    assert link.writes == questions
    assert 100 * questions <= link.ticks_ms() - before < 200 * questions


def test_an_exception_for_everything_means_a_device_no_profile_fits() -> None:
    dev = FakeSlave(9, holding={9000: 0x1001})
    dev.exception = 4
    p, _ = prober(dev)
    hit = p.probe_unit(9)
    assert hit is not None and hit.verdict == probe.UNKNOWN
    assert "exception 4" in evidence(hit.candidates[0])


def test_damaged_replies_are_asked_again_then_reported() -> None:
    p, link = prober(im100(3))
    link.set_manipulator(lambda reply: reply[:-1] + bytes([reply[-1] ^ 0xFF]))
    hit = p.probe_unit(3)
    assert hit is not None and hit.verdict == probe.DAMAGED
    assert hit.note == "replies are damaged (CRC): check the line"


def test_two_profiles_that_fit_alike_are_ambiguous() -> None:
    a = probe.Candidate("A", "", "documented", [probe.Evidence("", probe.W_PLAUSIBLE)] * 3)
    b = probe.Candidate("B", "", "documented", [probe.Evidence("", probe.W_PLAUSIBLE)] * 3)
    assert probe.verdict([a, b])[0] == probe.AMBIGUOUS
    b.evidence = b.evidence[:1]
    assert probe.verdict([a, b]) == (probe.GUESS, "from readings only")
    a.evidence = [probe.Evidence("", probe.W_FAILED)]
    assert probe.verdict([a])[0] == probe.UNKNOWN


def test_format_value_applies_the_exponent_and_unit() -> None:
    assert probe.format_value(182, {"exp": -1, "unit": "mA"}) == "18.2 mA"
    assert probe.format_value(-45, {"exp": -1, "unit": "degC"}) == "-4.5 degC"
    assert probe.format_value(917, {"exp": -3, "unit": ""}) == "0.917"
    assert probe.format_value(7, {"exp": 2, "unit": "Wh"}) == "700 Wh"
    assert probe.format_value(1, {"exp": 0, "unit": ""}) == "1"
    assert probe.format_value(21.5, {"exp": 0, "unit": "degC"}) == "21.5 degC"
