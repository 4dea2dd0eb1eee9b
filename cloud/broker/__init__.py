"""Mosquitto configuration for mimamori: accounts, password hashes, ACL, mosquitto.conf.

Plain data in, files and control commands out; nothing here reads the
database (:mod:`cloud.brokersync` feeds it the terminal table). See
``cloud/broker/README.md``.
"""

from __future__ import annotations

from cloud.broker.accounts import Account, Role, account_from_row, accounts_from_rows
from cloud.broker.errors import BrokerConfigError
from cloud.broker.passwd import hash_password, new_secret, verify_password
from cloud.broker.render import RenderedConfig, render_directory, write_accounts
from cloud.broker.sealing import seal
from cloud.broker.settings import BrokerSettings, Listener, ListenerKind, TlsFiles

__all__ = [
    "Account",
    "BrokerConfigError",
    "BrokerSettings",
    "Listener",
    "ListenerKind",
    "RenderedConfig",
    "Role",
    "TlsFiles",
    "account_from_row",
    "accounts_from_rows",
    "hash_password",
    "new_secret",
    "render_directory",
    "seal",
    "verify_password",
    "write_accounts",
]
