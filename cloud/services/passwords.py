"""Password hashing for people (argon2id, a slow, memory-hard KDF).

Terminal MQTT passwords are a different thing: random machine secrets hashed
in Mosquitto's format by :mod:`cloud.broker.passwd`.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloud.services.errors import N_, Invalid


class Passwords:
    """Hash and check passwords with fixed argon2id parameters.

    ``verify`` of an unknown user still costs one hash (:meth:`burn`), so the
    response time does not tell which e-mail addresses have accounts.
    """

    def __init__(self, time_cost: int, memory_kib: int, parallelism: int, min_length: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self.min_length = min_length
        self._dummy = self._hasher.hash("not a password of anyone")

    def hash(self, password: str) -> str:
        """Hash of a new password; :class:`Invalid` if it breaks the policy."""
        self.check_policy(password)
        return self._hasher.hash(password)

    def check_policy(self, password: str) -> None:
        if len(password) < self.min_length:
            raise Invalid(
                N_("The password must have at least %(n)s characters."), n=self.min_length
            )
        if len(password) > 1024:
            raise Invalid(N_("The password is longer than 1024 characters."))

    def verify(self, password_hash: str, password: str) -> bool:
        """True if ``password`` matches; False for a mismatch or an unusable hash."""
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def burn(self, password: str) -> None:
        """Spend the time of one verification (for unknown accounts)."""
        self.verify(self._dummy, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True
