"""A terminal's MQTT password as the cloud keeps it.

The terminal row holds Mosquitto's hash of the password
(:mod:`cloud.broker.passwd`) and, when the broker reconciler's public key is
known, the password sealed to that key (:mod:`cloud.broker.sealing`), so the
reconciler can hand it to the broker; never the password itself.
"""

from __future__ import annotations

from cloud.broker import BrokerConfigError, hash_password, seal, verify_password
from cloud.errors import InvalidValue
from cloud.models import Terminal


def set_mqtt_password(terminal: Terminal, password: str, seal_key: str | None = None) -> None:
    """Store the hash of a new MQTT password on ``terminal`` and, with
    ``seal_key`` (the reconciler's public key), the password sealed for the
    reconciler. Raises :class:`InvalidValue` for an empty password or a bad
    key. The caller commits."""
    try:
        terminal.credential_hash = hash_password(password)
        terminal.credential_sealed = seal(seal_key, password) if seal_key else None
    except BrokerConfigError as err:
        raise InvalidValue(str(err)) from err


def check_mqtt_password(terminal: Terminal, password: str) -> bool:
    """True if ``password`` is the terminal's MQTT password; False if none is set.
    Raises :class:`InvalidValue` if the stored hash is corrupt."""
    if terminal.credential_hash is None:
        return False
    try:
        return verify_password(password, terminal.credential_hash)
    except BrokerConfigError as err:
        raise InvalidValue(f"terminal {terminal.id}: {err}") from err
