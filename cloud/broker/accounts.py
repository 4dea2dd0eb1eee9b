"""Broker accounts as plain data: who logs in, with what secret, in which role.

The generator takes rows ``(username, password_hash_or_plaintext, role)``;
nothing here knows about the cloud's database. Roles decide both the listener
an account may log in on and its topic rights (see :mod:`cloud.broker.acl`
and :mod:`cloud.broker.dynsec`):

- ``terminal``: username is the terminal id as ``protocol.frames.check_tid``
  defines it (``[A-Za-z0-9_-]{1,32}``), the topic segment of its role's ACL
  (never ``+``, ``#`` or ``/``). Seeds the dynamic-security plugin's file.
- ``admin``: the reconciler's account in the plugin, always named
  ``mimamori.admin``; it may only use the plugin's control topic.
- ``ingest``, ``web``, ``monitor``: cloud service accounts,
  ``[A-Za-z0-9_.-]{1,64}``, in the service listener's password file.

Terminals and services are served on separate listeners with separate
account stores, so a terminal id may equal a service name without either
gaining the other's rights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from cloud.broker.dynsec import ADMIN_USERNAME
from cloud.broker.errors import BrokerConfigError
from cloud.broker.passwd import hash_password, is_password_hash
from protocol.errors import ProtocolError
from protocol.frames import check_tid

SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class Role(StrEnum):
    TERMINAL = "terminal"
    INGEST = "ingest"
    WEB = "web"
    MONITOR = "monitor"
    # The reconciler's account: lives in the dynamic-security plugin with the
    # terminals and may use only its control topic.
    ADMIN = "admin"

    @property
    def is_service(self) -> bool:
        """Logs in on the service listener (password file)."""
        return self not in (Role.TERMINAL, Role.ADMIN)


@dataclass(frozen=True)
class Account:
    """One broker login. ``password_hash`` is always a mosquitto hash.

    Construction raises BrokerConfigError for a username the role does not
    allow or a value that is not a mosquitto hash.
    """

    username: str
    password_hash: str
    role: Role

    def __post_init__(self) -> None:
        if self.role is Role.ADMIN:
            if self.username != ADMIN_USERNAME:
                raise BrokerConfigError(f"the admin account is named {ADMIN_USERNAME!r}")
        elif self.role.is_service:
            if not SERVICE_NAME_RE.fullmatch(self.username):
                raise BrokerConfigError(
                    f"bad {self.role.value} username {self.username!r}: "
                    f"must match {SERVICE_NAME_RE.pattern}"
                )
        else:
            try:
                check_tid(self.username)
            except ProtocolError as err:
                raise BrokerConfigError(f"bad terminal username: {err}") from err
        if not is_password_hash(self.password_hash):
            raise BrokerConfigError(f"account {self.username!r}: not a mosquitto password hash")


def parse_role(value: str) -> Role:
    """Role from its name; BrokerConfigError names the allowed ones."""
    try:
        return Role(value.strip().lower())
    except ValueError as err:
        allowed = ", ".join(r.value for r in Role)
        raise BrokerConfigError(f"unknown role {value!r} (allowed: {allowed})") from err


def account_from_row(
    username: str, secret: str, role: str | Role, iterations: int | None = None
) -> Account:
    """Build an Account from a row, hashing ``secret`` unless it already is a hash.

    A secret that is a complete, well-formed ``$7$``/``$6$`` hash is taken as
    that hash (as ``mosquitto_passwd -U`` does); anything else is plaintext.
    """
    role = role if isinstance(role, Role) else parse_role(role)
    if is_password_hash(secret):
        password_hash = secret
    elif iterations is None:
        password_hash = hash_password(secret)
    else:
        password_hash = hash_password(secret, iterations)
    return Account(username, password_hash, role)


def accounts_from_rows(
    rows: Iterable[tuple[str, str, str | Role]], iterations: int | None = None
) -> list[Account]:
    """Accounts from ``(username, secret, role)`` rows; refuses duplicates.

    A username may appear once among terminals and once among services (they
    are different listeners), never twice in the same group; one admin at most.
    """
    accounts: list[Account] = []
    seen: set[tuple[bool, str]] = set()
    for username, secret, role in rows:
        account = account_from_row(username, secret, role, iterations)
        key = (account.role.is_service, account.username)
        if key in seen:
            raise BrokerConfigError(f"duplicate account {account.username!r}")
        seen.add(key)
        accounts.append(account)
    return accounts


def render_password_file(accounts: Iterable[Account]) -> str:
    """The password file mosquitto reads: ``username:hash`` lines, sorted."""
    lines = sorted(f"{a.username}:{a.password_hash}" for a in accounts)
    return "".join(line + "\n" for line in lines)
