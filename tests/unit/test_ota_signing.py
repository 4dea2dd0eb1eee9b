"""Signing bundles for over-the-air updates: keygen, build --trust, sign, and the
terminal's own verifier (edge/ed25519.py) accepting what PyNaCl signed."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from edge import ed25519
from edge.installer import cli
from edge.installer.errors import BundleError, UsageError
from edge.installer.signing import keygen, load_key, sign_bundle
from protocol.ota import signed_message
from tests.support import ota_fixture


def test_the_committed_mpy_fixture_is_what_the_generator_writes() -> None:
    assert ota_fixture.PATH.read_text(encoding="utf-8") == ota_fixture.make(), (
        "regenerate: python -m tests.support.ota_fixture"
    )


def test_keygen_writes_a_private_file_and_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "ota.key"
    public = keygen(key)
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert (tmp_path / "ota.pub").read_text().strip() == public
    assert load_key(key).verify_key.encode().hex() == public
    with pytest.raises(UsageError, match="never overwritten"):
        keygen(key)
    key.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        load_key(key)


def test_build_trust_sign_and_the_terminal_verifier_agrees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "ota.key"
    assert cli.main(["keygen", "--out", str(key)]) == 0
    public = (tmp_path / "ota.pub").read_text().strip()
    out = tmp_path / "bundle"
    # a bundle that trusts no key is refused: it could never be updated again
    assert cli.main(["build", "--out", str(out)]) == 0
    with pytest.raises(BundleError, match="trusts no key"):
        sign_bundle(out, key)
    assert cli.main(["build", "--out", str(out), "--trust", str(tmp_path / "ota.pub")]) == 0
    assert json.loads((out / "ota_keys.json").read_text()) == {"keys": [public]}
    capsys.readouterr()
    assert cli.main(["sign", "--key", str(key), "--bundle", str(out)]) == 0
    archive = Path(capsys.readouterr().out.split("upload ")[-1].strip())
    sig = json.loads((out / "manifest.sig").read_text())
    body = (out / "manifest.json").read_bytes()
    message = signed_message(hashlib.sha256(body).digest())
    assert sig["key"] == public
    assert ed25519.verify(bytes.fromhex(public), message, bytes.fromhex(sig["sig"]))
    assert not ed25519.verify(bytes.fromhex(public), message + b"x", bytes.fromhex(sig["sig"]))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:2] == ["manifest.json", "manifest.sig"] and "edge/agent.mpy" in names
    assert "main.py" in names and "ota_keys.json" in names
    # signing again gives the same archive (deterministic), a wrong key value is refused
    first = archive.read_bytes()
    sign_bundle(out, key, archive)
    assert archive.read_bytes() == first
    assert cli.main(["build", "--out", str(out), "--trust", "abc"]) == 2
