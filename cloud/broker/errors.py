"""Errors of the broker-configuration part of the cloud layer.

Everything here raises :class:`BrokerConfigError` for bad input: a malformed
username, an unknown role, a password hash mosquitto would not understand, a
path the mosquitto config parser would split. The message names the
offending value so an operator can fix the input file. It is a
:class:`cloud.errors.ConfigError` (the cloud layer's family) and a
``ValueError``.
"""

from __future__ import annotations

from cloud.errors import ConfigError


class BrokerConfigError(ConfigError, ValueError):
    """Input that would produce a broker configuration mosquitto rejects or misreads."""
