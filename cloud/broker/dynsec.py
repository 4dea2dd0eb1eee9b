"""Terminal accounts in Mosquitto's dynamic-security plugin, as plain data.

The terminal listener authenticates and authorises with the plugin
(``mosquitto_dynamic_security.so``, shipped with mosquitto 2.0). Its state is
a JSON file the broker owns and rewrites after every change; the cloud
changes it at run time by publishing JSON commands to
``$CONTROL/dynamic-security/v1`` (:mod:`cloud.broker.control` sends them,
:mod:`cloud.brokersync` decides which). This module builds both: the seed
file a new broker starts from, and the commands.

Layout, the same whichever way an account got there:

- one **client** per terminal, username = terminal id, with one role;
- one **role** per terminal, ``terminal:<tid>``, pinning it to its topics:
  publish ``mm/v1/<tid>/up/#``, subscribe to and receive
  ``mm/v1/<tid>/down/#``. The plugin of mosquitto 2.0 has no ``%u`` in its
  ACLs, hence a role each;
- the **admin** client (:data:`ADMIN_USERNAME`, not a valid terminal id, so
  no terminal can ever take its name) with a role that may only use the
  control topic;
- default access: deny everything not granted, receiving included (the
  plugin's own default lets clients receive whatever they subscribed to).

A client's ``textdescription`` carries :func:`fingerprint` of the password
hash the cloud holds, so a reconciler can tell a broker restored from an old
copy (same accounts, older passwords) from one that is up to date without
ever reading a password back (the plugin never returns them).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from cloud.broker.errors import BrokerConfigError
from cloud.broker.passwd import KEY_BYTES, SALT_BYTES, parse_pbkdf2
from protocol import topics

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
ADMIN_USERNAME = "mimamori.admin"  # "." is not allowed in terminal ids
ADMIN_ROLE = "mimamori.admin"
TERMINAL_ROLE_PREFIX = "terminal:"
FINGERPRINT_PREFIX = "cred:"
CONFIG_FILE = "dynamic-security.json"


def terminal_role(tid: str) -> str:
    return TERMINAL_ROLE_PREFIX + tid


def terminal_acls(tid: str) -> list[dict[str, Any]]:
    """The ACL entries of ``tid``'s role (its own uplink and downlink only)."""
    up = f"{topics.PREFIX}/{tid}/{topics.UP}/#"
    down = f"{topics.PREFIX}/{tid}/{topics.DOWN}/#"
    return [
        _acl("publishClientSend", up),
        _acl("subscribePattern", down),
        _acl("publishClientReceive", down),
        _acl("unsubscribePattern", down),
    ]


def admin_acls() -> list[dict[str, Any]]:
    control = "$CONTROL/dynamic-security/#"
    return [
        _acl("publishClientSend", control),
        _acl("subscribePattern", control),
        _acl("publishClientReceive", control),
        _acl("unsubscribePattern", control),
    ]


DEFAULT_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": False,
}


def fingerprint(password_hash: str) -> str:
    """A short public tag of a password hash: equal hashes, equal tags.

    Stored as the client's description; reveals nothing usable (a digest of
    a salted PBKDF2 output of a random secret).
    """
    digest = hashlib.sha256(password_hash.encode("ascii")).hexdigest()[:24]
    return FINGERPRINT_PREFIX + digest


def seed_config(
    admin_hash: str | None, terminals: Iterable[tuple[str, str, bool]] = ()
) -> dict[str, Any]:
    """The plugin's JSON file for a new broker.

    Without ``admin_hash`` nobody can change the accounts while the broker
    runs (a fixed set, as some tests want). ``admin_hash`` and each
    terminal's ``(tid, password_hash, enabled)`` carry mosquitto ``$7$``
    hashes; the plugin stores the same PBKDF2-SHA512 with a 12-byte salt, so
    no plaintext is needed. Raises BrokerConfigError for
    a ``$6$`` or malformed hash (the plugin cannot take those).
    """
    clients = []
    roles = [{"rolename": ADMIN_ROLE, "acls": admin_acls()}]
    if admin_hash is not None:
        clients.append(_client(ADMIN_USERNAME, admin_hash, ADMIN_ROLE, "mimamori reconciler", True))
    for tid, password_hash, enabled in terminals:
        clients.append(_client(tid, password_hash, terminal_role(tid), None, enabled))
        roles.append({"rolename": terminal_role(tid), "acls": terminal_acls(tid)})
    return {"defaultACLAccess": DEFAULT_ACCESS, "clients": clients, "groups": [], "roles": roles}


# -- control commands (JSON objects for CONTROL_TOPIC) -------------------------


def create_terminal(tid: str, password: str, password_hash: str) -> list[dict[str, Any]]:
    """Commands that make ``tid``'s role and client (role first: clients name it)."""
    return [
        {"command": "createRole", "rolename": terminal_role(tid), "acls": terminal_acls(tid)},
        {
            "command": "createClient",
            "username": tid,
            "password": password,
            "textname": "mimamori terminal",
            "textdescription": fingerprint(password_hash),
            "roles": [{"rolename": terminal_role(tid)}],
        },
    ]


def set_password(tid: str, password: str, password_hash: str) -> list[dict[str, Any]]:
    """New password and its fingerprint; the plugin disconnects the client's sessions."""
    return [
        {
            "command": "modifyClient",
            "username": tid,
            "password": password,
            "textdescription": fingerprint(password_hash),
        }
    ]


def set_enabled(tid: str, enabled: bool) -> list[dict[str, Any]]:
    """Enable or disable; disabling disconnects the client's sessions."""
    return [{"command": "enableClient" if enabled else "disableClient", "username": tid}]


def delete_terminal(tid: str) -> list[dict[str, Any]]:
    """Remove client and role; deleting the client disconnects its sessions."""
    return [
        {"command": "deleteClient", "username": tid},
        {"command": "deleteRole", "rolename": terminal_role(tid)},
    ]


def _acl(kind: str, topic: str) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def _client(
    username: str, password_hash: str, role: str, text: str | None, enabled: bool
) -> dict[str, Any]:
    iterations, salt, key = parse_pbkdf2(password_hash)
    if len(salt) != SALT_BYTES or len(key) != KEY_BYTES:
        raise BrokerConfigError(f"{username}: the plugin needs a {SALT_BYTES}-byte salt")
    client: dict[str, Any] = {
        "username": username,
        "textname": text or "mimamori terminal",
        "password": base64.b64encode(key).decode("ascii"),
        "salt": base64.b64encode(salt).decode("ascii"),
        "iterations": iterations,
        "roles": [{"rolename": role}],
    }
    if role != ADMIN_ROLE:
        client["textdescription"] = fingerprint(password_hash)
    if not enabled:
        client["disabled"] = True
    return client
