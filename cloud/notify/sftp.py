"""SFTP uploads to a customer's server: pinned host key, the endpoint's own key.

A forwarding endpoint of kind ``sftp`` has an address
``sftp://user@host[:port]/directory``, the server's host key as the customer
gave it (``ssh-ed25519 AAAA...``, pinned: any other key is refused), and an
Ed25519 key pair the site made for it (:func:`new_key`); the customer puts
the public half in the account's ``authorized_keys``.

:func:`upload` writes one file exactly once: it uploads to ``.<name>.part``
in the directory and renames it to ``<name>`` (POSIX rename, so the
receiver never sees half a file under the final name), and when ``<name>``
is already there it does nothing: an earlier attempt delivered it and only
its outcome was lost. A receiver that picks up and removes files (as HULFT
or a cron job does) must therefore not reuse names; ours carry the period.

The connection is dialled by :func:`cloud.notify.netio.open_connection` with
the address guard (:mod:`cloud.notify.netguard`), and the whole exchange
ends by a total deadline (the transport is closed when it passes).

Errors: refused address, unreachable server, refused key (the customer has
not installed it yet), a missing directory: transient (retried). A host key
other than the pinned one: permanent (dead-lettered: someone must look).
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.errors import InvalidValue
from cloud.notify import netio
from cloud.notify.errors import (
    PermanentDeliveryError,
    TransientDeliveryError,
    UnreachableError,
)
from cloud.notify.netio import Deadline, DeadlineExceeded, Guard

KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
        "rsa-sha2-256",
        "rsa-sha2-512",
    }
)


@dataclass(frozen=True)
class Destination:
    user: str
    host: str
    port: int
    directory: str


def parse_url(url: str) -> Destination:
    """``sftp://user@host[:port]/directory``; raises :class:`InvalidValue`."""
    parts = urlsplit(url)
    try:
        port = parts.port or 22
    except ValueError as err:
        raise InvalidValue("SFTP address: bad port") from err
    if parts.scheme != "sftp" or not parts.hostname or not parts.username or parts.password:
        raise InvalidValue("SFTP address must be sftp://user@host[:port]/directory (no password)")
    directory = unquote(parts.path) or "/"
    if parts.query or parts.fragment or "\x00" in directory:
        raise InvalidValue("SFTP address: no query or fragment")
    return Destination(unquote(parts.username), parts.hostname, port, directory)


def new_key(comment: str) -> tuple[str, str]:
    """A fresh Ed25519 key: (private key, OpenSSH format; public line to install)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    return private, public_line(private, comment)


def public_line(private: str, comment: str) -> str:
    """``ssh-ed25519 AAAA... <comment>``: the line for ``authorized_keys``."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    return f"{key.get_name()} {key.get_base64()} {comment}".strip()


def parse_host_key(text: str) -> str:
    """The host key in a line as ``ssh-keyscan``, ``known_hosts`` or a
    ``.pub`` file give it, normalised to ``<type> <base64>``. Raises
    :class:`InvalidValue`."""
    words = text.split()
    for i, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            blob = words[i + 1]
            try:
                raw = base64.b64decode(blob, validate=True)
            except ValueError as err:
                raise InvalidValue("host key: not base64") from err
            # The blob starts with its own type name (RFC 4253, 6.6).
            if raw[4 : 4 + len(word)] != word.encode() and not word.startswith("rsa-sha2"):
                raise InvalidValue("host key: type and key do not match")
            kind = "ssh-rsa" if word.startswith("rsa-sha2") else word
            return f"{kind} {blob}"
    raise InvalidValue("host key: expected a line such as 'ssh-ed25519 AAAA...'")


def fingerprint(host_key: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def upload(
    dest: Destination,
    host_key: str,
    private_key: str,
    name: str,
    data: bytes,
    *,
    timeout_s: float,
    guard: Guard | None,
) -> bool:
    """Put ``data`` as ``<directory>/<name>`` once; True if uploaded now,
    False if the file was already there. Raises :class:`DeliveryError`s
    (see the module docstring)."""
    deadline = Deadline(timeout_s)
    try:
        sock = netio.open_connection(dest.host, dest.port, deadline, guard)
    except (OSError, DeadlineExceeded) as err:  # the guard's Refused passes through
        raise UnreachableError("could not connect") from err
    # paramiko reads with short timeouts of its own to poll its state; the
    # timer below bounds the whole exchange instead.
    sock._deadline = None
    transport = paramiko.Transport(sock)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        transport.close()

    timer = threading.Timer(deadline.left(), cut)
    timer.daemon = True
    timer.start()
    try:
        return _exchange(
            transport,
            dest,
            host_key=host_key,
            private_key=private_key,
            name=name,
            data=data,
            deadline=deadline,
        )
    except paramiko.AuthenticationException as err:
        raise UnreachableError("the server refused the endpoint's key") from err
    except (paramiko.SSHException, OSError, EOFError, DeadlineExceeded) as err:
        if expired.is_set():
            raise TransientDeliveryError(f"no complete answer within {timeout_s:g} s") from err
        if isinstance(err, OSError) and err.errno is not None:
            # An SFTP status (no such directory, permission denied): the
            # server answered, the customer can fix it.
            raise TransientDeliveryError(f"SFTP: {err.strerror or err}") from err
        raise UnreachableError(f"SSH: {type(err).__name__}") from err
    finally:
        timer.cancel()
        transport.close()


def _exchange(
    transport: paramiko.Transport,
    dest: Destination,
    *,
    host_key: str,
    private_key: str,
    name: str,
    data: bytes,
    deadline: Deadline,
) -> bool:
    transport.start_client(timeout=deadline.left())
    key = transport.get_remote_server_key()
    if f"{key.get_name()} {key.get_base64()}" != host_key:
        raise PermanentDeliveryError(
            f"the server's host key ({fingerprint(f'{key.get_name()} {key.get_base64()}')}) "
            "is not the pinned one"
        )
    transport.auth_publickey(
        dest.user, paramiko.Ed25519Key.from_private_key(io.StringIO(private_key))
    )
    sftp = paramiko.SFTPClient.from_transport(transport)
    if sftp is None:
        raise paramiko.SSHException("no SFTP session")
    with sftp:
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(deadline.left())
        final = posixpath.join(dest.directory, name)
        try:
            sftp.stat(final)
            return False  # delivered by an earlier attempt whose outcome was lost
        except FileNotFoundError:
            pass
        part = posixpath.join(dest.directory, f".{name}.part")
        with sftp.open(part, "wb") as f:
            f.write(data)
        sftp.posix_rename(part, final)
    return True
