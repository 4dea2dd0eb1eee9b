"""A small signed update bundle for the cloud-side OTA tests (a real bundle
comes from mimamori-install build; these files need not run, only verify)."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from edge.installer.signing import signature, write_archive

KEY = SigningKey(hashlib.sha256(b"cloud ota test key").digest())
OTHER = SigningKey(hashlib.sha256(b"another key").digest())
PUBLIC = KEY.verify_key.encode().hex()


def make_bundle(
    tmp: Path, key: SigningKey = KEY, big: int = 0, tamper: bool = False, trust: bool = True
) -> bytes:
    """A small signed bundle archive, as mimamori-install sign writes it."""
    files = {"edge/agent.mpy": b"M\x06" + bytes(range(256)) * 12, "main.py": b"# loader\n"}
    if trust:
        files["ota_keys.json"] = json.dumps({"keys": [PUBLIC]}).encode()
    if big:
        files["edge/big.mpy"] = b"x" * big
    for path, data in files.items():
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_bytes(data)
    entries = {
        p: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for p, d in files.items()
    }
    manifest = {
        "format": 1,
        "firmware_version": "2.0.0",
        "mpy_version": "6.3",
        "bundle_id": hashlib.sha256(repr(sorted(entries.items())).encode()).hexdigest(),
        "files": entries,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (tmp / "manifest.json").write_text(body)
    (tmp / "manifest.sig").write_text(json.dumps(signature(body.encode(), key)))
    if tamper:
        (tmp / "edge/agent.mpy").write_bytes(b"M\x06evil")
    write_archive(tmp, manifest, tmp / "b.tar")
    return (tmp / "b.tar").read_bytes()


def seed_fleet(
    s: Any, customer_name: str, tids: tuple[str, ...], bundle_dir: Path, now: datetime
) -> tuple[Any, Any, Any]:
    """A customer with terminals ``tids`` under contract, an operator, and a
    bundle signed with :data:`PUBLIC`'s key uploaded by that operator (in
    session ``s``, committed). Returns (customer, operator viewer, bundle)."""
    from cloud.models import Customer, Role, Terminal, User
    from cloud.services import ota
    from cloud.services.scope import Viewer

    customer = Customer(name=customer_name, timezone="Asia/Tokyo")
    s.add(customer)
    s.flush()
    for tid in tids:
        s.add(Terminal(id=tid, customer_id=customer.id, contract_start=date(2025, 1, 1)))
    user = User(email="op@example.com", password_hash="-", role=Role.OPERATOR)
    s.add(user)
    s.commit()
    operator = Viewer(user.id, user.email, Role.OPERATOR, None)
    bundle = ota.upload_bundle(
        s, operator, make_bundle(bundle_dir), trusted_keys=[PUBLIC], now=now, ip=None
    )
    return customer, operator, bundle
