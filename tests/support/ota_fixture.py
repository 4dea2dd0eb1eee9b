"""The signed test bundle the MicroPython-tier OTA tests use (tests/mpy/data/ota_bundle.json).

The terminal cannot sign, so the bundle is made here, on CPython, with
PyNaCl and the installer's own signing code, and committed; a unit test
(tests/unit/test_ota_signing.py) fails when the file differs from what
:func:`make` writes. The keys come from fixed seeds: they sign nothing but
this test bundle. Regenerate with ``python -m tests.support.ota_fixture``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nacl.signing import SigningKey

from edge.installer import bundle
from edge.installer.signing import signature
from protocol.ota import KEYS

PATH = Path(__file__).resolve().parents[1] / "mpy" / "data" / "ota_bundle.json"
TRUSTED = SigningKey(hashlib.sha256(b"mimamori OTA test key, trusted").digest())
OTHER = SigningKey(hashlib.sha256(b"mimamori OTA test key, not trusted").digest())


def public(key: SigningKey) -> str:
    return key.verify_key.encode().hex()


def make() -> str:
    """The fixture's JSON text."""
    files = {
        "edge/x.mpy": bytes(range(256)) * 20,  # three chunks of 2048
        "protocol/y.mpy": b"y" * 100,
        "main.py": b"# the loader: never sent over the air\n",
        KEYS: bundle.trust_file([public(TRUSTED)]).encode(),
    }
    entries = {
        p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for p, d in files.items()
    }
    manifest = {
        "format": bundle.MANIFEST_FORMAT,
        "firmware_version": "9.9.9",
        "mpy_version": "6.3",
        "agent_module": bundle.AGENT_MODULE,
        "bundle_id": bundle.bundle_id(entries),  # type: ignore[arg-type]
        "files": entries,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    doc = {
        "public": public(TRUSTED),
        "manifest": text,
        "sig": json.dumps(signature(text.encode(), TRUSTED)),
        "sig_untrusted": json.dumps(signature(text.encode(), OTHER)),
        "files": {p: d.hex() for p, d in sorted(files.items())},
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    PATH.write_text(make(), encoding="utf-8")
    print("wrote", PATH)
