"""atheris harness for the frame decoders (device ``protocol.frames`` and cloud ``cloud.codec``).

Contract under test: any byte string either decodes to a frame or raises
``protocol.errors.ProtocolError`` with a known reason, on both decoders,
and both agree on accept/reject; whatever decodes re-encodes to a canonical
frame that decodes to the same bytes again. Any other exception, or a
disagreement, is a crash that atheris reports with the input.

    python fuzz/fuzz_frames.py -runs=1000000 [corpus_dir]

The golden vectors seed the corpus, so mutation starts from valid frames.
"""

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from cloud.codec import decode_frame
    from protocol import frames
    from protocol.errors import REASONS, ProtocolError

ROOT = Path(__file__).resolve().parents[1]


def _verdict(decode, buf):
    try:
        return True, decode(buf)
    except ProtocolError as err:
        if err.reason not in REASONS:
            raise AssertionError("unknown reason %r" % err.reason) from err
        return False, err.reason


def test_one_input(buf: bytes) -> None:
    device_ok, device = _verdict(frames.decode, buf)
    cloud_ok, _cloud = _verdict(decode_frame, buf)
    if device_ok != cloud_ok:
        raise AssertionError("decoders disagree on %s: device=%r" % (buf.hex(), device))
    if device_ok:
        again = frames.encode(device)
        if frames.encode(frames.decode(again)) != again:
            raise AssertionError("re-encoding is not stable for %s" % buf.hex())


def seeds() -> list[bytes]:
    """Valid frames from the golden vectors (protocol/vectors/*.json)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.protocol import load_vectors  # noqa: PLC0415

    return [bytes.fromhex(v["hex"]) for v in load_vectors() if "frame" in v]


def main(argv: list[str]) -> None:
    corpus = ROOT / "build" / "fuzz" / "frames-corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for k, seed in enumerate(seeds()):  # valid inputs must pass before fuzzing starts
        test_one_input(seed)
        (corpus / ("vector-%03d" % k)).write_bytes(seed)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv = [*argv, str(corpus)]  # mutate from the golden vectors
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
