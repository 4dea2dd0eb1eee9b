"""Mosquitto password hashes, made in Python so the cloud never shells out.

Mosquitto 2.0 reads password-file lines ``username:HASH`` where HASH is one of

    $7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt)>
    $6$<base64 salt>$<base64 SHA512(password + salt)>        (1.6 and older)

with standard base64 (``+/`` and ``=`` padding), a 12-byte salt and a 64-byte
derived key. :func:`hash_password` writes the ``$7$`` form byte for byte as
``mosquitto_passwd`` does (the integration tests check it against the real
binary); :func:`verify_password` accepts both forms.

Iterations: ``mosquitto_passwd`` uses 101. The broker pays the PBKDF2 cost on
every CONNECT, so after an outage thousands of terminals reconnecting at once
pay it together. Terminal passwords are random 128-bit+ secrets made by the
cloud (see :func:`new_secret`), for which iteration count adds nothing against
offline guessing; human-chosen passwords are never used for broker accounts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

from cloud.broker.errors import BrokerConfigError

DEFAULT_ITERATIONS = 101
SALT_BYTES = 12
KEY_BYTES = 64

_B64 = r"[A-Za-z0-9+/]+={0,2}"
_PBKDF2_RE = re.compile(rf"\$7\$([1-9][0-9]{{0,8}})\$({_B64})\$({_B64})")
_SHA512_RE = re.compile(rf"\$6\$({_B64})\$({_B64})")


def new_secret(nbytes: int = 24) -> str:
    """A random password for a machine account: URL-safe, no ``:`` or ``,``."""
    return secrets.token_urlsafe(nbytes)


def hash_password(
    password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Hash ``password`` in mosquitto's ``$7$`` PBKDF2-SHA512 format.

    ``salt`` is random unless given (tests pass one to compare with
    ``mosquitto_passwd``). Raises BrokerConfigError for an empty password,
    a non-positive iteration count or a salt of the wrong size.
    """
    if not password:
        raise BrokerConfigError("empty password")
    if not 1 <= iterations <= 999_999_999:
        raise BrokerConfigError(f"iterations out of range: {iterations}")
    if salt is None:
        salt = secrets.token_bytes(SALT_BYTES)
    if len(salt) != SALT_BYTES:
        raise BrokerConfigError(f"salt must be {SALT_BYTES} bytes, got {len(salt)}")
    key = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(key)}"


def is_password_hash(value: str) -> bool:
    """True when ``value`` is a complete, well-formed mosquitto hash."""
    try:
        _parse(value)
    except BrokerConfigError:
        return False
    return True


def verify_password(password: str, password_hash: str) -> bool:
    """Check ``password`` against a ``$7$`` or ``$6$`` hash, in constant time.

    Raises BrokerConfigError when ``password_hash`` is not a mosquitto hash.
    """
    kind, iterations, salt, key = _parse(password_hash)
    data = password.encode("utf-8")
    if kind == "7":
        got = hashlib.pbkdf2_hmac("sha512", data, salt, iterations)
    else:
        got = hashlib.sha512(data + salt).digest()
    return hmac.compare_digest(got, key)


def parse_pbkdf2(value: str) -> tuple[int, bytes, bytes]:
    """``(iterations, salt, key)`` of a ``$7$`` hash; BrokerConfigError for
    anything else (a ``$6$`` hash has no iteration count to hand on)."""
    kind, iterations, salt, key = _parse(value)
    if kind != "7":
        raise BrokerConfigError("a $7$ (PBKDF2) hash is needed here, not $6$")
    return iterations, salt, key


def _parse(value: str) -> tuple[str, int, bytes, bytes]:
    match = _PBKDF2_RE.fullmatch(value)
    if match:
        kind, iterations, salt_b64, key_b64 = "7", int(match[1]), match[2], match[3]
    else:
        match = _SHA512_RE.fullmatch(value)
        if not match:
            raise BrokerConfigError("not a mosquitto $7$ or $6$ password hash")
        kind, iterations, salt_b64, key_b64 = "6", 0, match[1], match[2]
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        key = base64.b64decode(key_b64, validate=True)
    except binascii.Error as err:
        raise BrokerConfigError("password hash has bad base64") from err
    # A SHA-512 output is 64 bytes; any other length can never match a login.
    if len(key) != KEY_BYTES or not salt:
        raise BrokerConfigError("password hash has wrong salt or key length")
    return kind, iterations, salt, key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
