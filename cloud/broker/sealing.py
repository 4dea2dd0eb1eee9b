"""Terminal passwords sealed for the reconciler, and only for it.

Mosquitto 2.0's dynamic-security plugin takes a new password only as
plaintext over its control topic; it cannot import a hash. A broker that
lost its state (replaced, restored from an old copy) can therefore be
refilled from the terminal table only if the cloud can produce each
terminal's password again. So next to the ``$7$`` hash (which verifies, and
which a clustered broker's database authentication reads) the terminal row
keeps the password *sealed* to the reconciler's public key: libsodium's
sealed box (X25519 + XSalsa20-Poly1305, PyNaCl). The web processes, which
create passwords, hold only the public key and cannot open what they
sealed; a copy of the database opens nothing; only the reconciler, which
also holds the broker's admin password (which can create any account
anyway), holds the private key.

Keys are 32 bytes, written as standard base64 (``python -m cloud.brokersync
keygen`` makes a pair). Every failure raises :class:`BrokerConfigError`.
"""

from __future__ import annotations

import base64
import binascii

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from cloud.broker.errors import BrokerConfigError


def generate_keypair() -> tuple[str, str]:
    """``(public, private)`` keys, base64."""
    private = PrivateKey.generate()
    return _b64(bytes(private.public_key)), _b64(bytes(private))


def public_key_of(private_b64: str) -> str:
    return _b64(bytes(PrivateKey(_key(private_b64, "private")).public_key))


def seal(public_b64: str, secret: str) -> str:
    """``secret`` sealed to the holder of the private key, base64."""
    box = SealedBox(PublicKey(_key(public_b64, "public")))
    return _b64(box.encrypt(secret.encode("utf-8")))


def unseal(private_b64: str, sealed_b64: str) -> str:
    """The secret :func:`seal` sealed; BrokerConfigError for a wrong key or bad data."""
    box = SealedBox(PrivateKey(_key(private_b64, "private")))
    try:
        return box.decrypt(base64.b64decode(sealed_b64, validate=True)).decode("utf-8")
    except (CryptoError, binascii.Error, UnicodeDecodeError) as err:
        raise BrokerConfigError("sealed secret does not open with this key") from err


def _key(text: str, which: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error as err:
        raise BrokerConfigError(f"{which} sealing key is not base64") from err
    if len(raw) != 32:
        raise BrokerConfigError(f"{which} sealing key must be 32 bytes, got {len(raw)}")
    return raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
