"""Keys and signatures for over-the-air updates (docs/ota.md).

The operator's signing key is a file on the operator's machine, never in
the cloud: ``keygen`` writes it (mode 0600) and its public half (``.pub``,
64 hex digits); ``sign`` writes the bundle's ``manifest.sig`` and a tar
archive to upload. Signing and checking use PyNaCl (libsodium); terminals
check with their own verifier (``edge/ed25519.py``) the same message,
:func:`protocol.ota.signed_message` of the manifest's SHA-256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

from nacl.signing import SigningKey

from edge.installer.bundle import MANIFEST, check_bundle
from edge.installer.errors import BundleError, UsageError
from protocol.ota import KEYS, SIG, signed_message

KEY_KIND = "mimamori-ota-ed25519"


def keygen(out: Path) -> str:
    """Write a new signing key to ``out`` (0600, never overwritten) and its
    public key to ``out.pub``; return the public key (hex)."""
    out = Path(out)
    key = SigningKey.generate()
    doc = {"kind": KEY_KIND, "seed": key.encode().hex()}
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as err:
        raise UsageError("%s exists: a signing key is never overwritten" % out) from err
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc) + "\n")
    public = key.verify_key.encode().hex()
    out.with_suffix(".pub").write_text(public + "\n", encoding="ascii")
    return public


def load_key(path: Path) -> SigningKey:
    """The signing key in ``path``; UsageError when unreadable, malformed or
    readable by others (as ssh refuses such a key)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError("cannot read the signing key %s: %s" % (path, err)) from err
    if mode & 0o077:
        raise UsageError("%s is readable by others: chmod 600 it (it signs firmware)" % path)
    try:
        assert doc["kind"] == KEY_KIND
        return SigningKey(bytes.fromhex(doc["seed"]))
    except (AssertionError, KeyError, TypeError, ValueError) as err:
        raise UsageError("%s is not a mimamori OTA signing key" % path) from err


def read_public_key(text: str) -> str:
    """A public key given as hex or as the path of a ``.pub`` file; UsageError if neither."""
    candidate = text.strip()
    if not _is_hex_key(candidate):
        try:
            candidate = Path(text).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError("%s is neither a public key nor a readable .pub file" % text) from err
    if not _is_hex_key(candidate):
        raise UsageError("%s does not hold an Ed25519 public key (64 hex digits)" % text)
    return candidate.lower()


def _is_hex_key(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdefABCDEF" for c in text)


def signature(manifest_bytes: bytes, key: SigningKey) -> dict[str, str]:
    """The ``manifest.sig`` document for ``manifest_bytes``."""
    message = signed_message(hashlib.sha256(manifest_bytes).digest())
    return {
        "alg": "ed25519",
        "key": key.verify_key.encode().hex(),
        "sig": key.sign(message).signature.hex(),
    }


def sign_bundle(bundle: Path, key_path: Path, archive: Path | None = None) -> tuple[dict, Path]:
    """Sign ``bundle`` with the key in ``key_path``: write ``manifest.sig`` and
    the upload archive (default: beside the bundle, named by version and id).

    Refuses (BundleError) a bundle that differs from its manifest or trusts
    no key: terminals running it could never be updated over the air again.
    """
    bundle = Path(bundle)
    key = load_key(key_path)
    manifest = check_bundle(bundle)
    if KEYS not in manifest["files"]:
        raise BundleError(
            "bundle %s trusts no key (no %s): build it with --trust KEY.pub, or terminals "
            "running it could never be updated over the air again" % (bundle, KEYS)
        )
    manifest_bytes = (bundle / MANIFEST).read_bytes()
    doc = signature(manifest_bytes, key)
    (bundle / SIG).write_text(json.dumps(doc, sort_keys=True) + "\n", encoding="utf-8")
    if archive is None:
        archive = bundle.parent / (
            "mimamori-%s-%s.tar" % (manifest["firmware_version"], manifest["bundle_id"][:12])
        )
    write_archive(bundle, manifest, Path(archive))
    return doc, Path(archive)


def write_archive(bundle: Path, manifest: dict, out: Path) -> None:
    """A deterministic tar of the manifest, its signature and every file."""
    names = [MANIFEST, SIG, *sorted(manifest["files"])]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (bundle / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
