"""Render a complete mosquitto configuration directory.

    <out>/mosquitto.conf       main config, absolute paths to everything below
    <out>/terminals.passwd     terminal accounts (mode 0640)
    <out>/terminals.acl        per-terminal pattern ACL
    <out>/services.passwd      cloud service accounts (mode 0640)
    <out>/services.acl         per-service user ACL

TLS files and the persistence directory are referenced, never copied. Files
are replaced atomically (write to a temporary name, then rename), so a
broker reloading on SIGHUP never reads half a password file. Rendering the
same inputs twice gives the same files except for hashes made from
plaintext, which get a fresh salt.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cloud.broker import templates
from cloud.broker.accounts import Account, render_password_file
from cloud.broker.acl import render_service_acl, render_terminal_acl
from cloud.broker.errors import BrokerConfigError
from cloud.broker.settings import BrokerSettings, ListenerKind

SECRET_MODE = 0o640
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class RenderedConfig:
    """Where the rendered files are; ``conf`` is what ``mosquitto -c`` takes."""

    directory: Path
    conf: Path
    terminal_passwd: Path
    terminal_acl: Path
    service_passwd: Path
    service_acl: Path


def layout(directory: Path) -> RenderedConfig:
    directory = directory.resolve()
    return RenderedConfig(
        directory=directory,
        conf=directory / "mosquitto.conf",
        terminal_passwd=directory / "terminals.passwd",
        terminal_acl=directory / "terminals.acl",
        service_passwd=directory / "services.passwd",
        service_acl=directory / "services.acl",
    )


def render_conf(settings: BrokerSettings, files: RenderedConfig) -> str:
    """The text of mosquitto.conf for ``settings`` pointing at ``files``.

    Raises BrokerConfigError for a path mosquitto's parser would split
    (whitespace) or misread.
    """
    text = templates.GLOBAL.substitute(
        user=settings.user,
        pid_line=f"pid_file {_path(settings.pid_file)}\n" if settings.pid_file else "",
        data_dir=_path(settings.data_dir),
        autosave_interval=settings.autosave_interval,
        persistent_client_expiration=settings.persistent_client_expiration,
        max_packet_size=settings.max_packet_size,
        max_inflight_messages=settings.max_inflight_messages,
        max_queued_messages=settings.max_queued_messages,
        max_queued_bytes=settings.max_queued_bytes,
        sys_interval=settings.sys_interval,
        log_dest=(
            f"log_dest file {_path(settings.log_file)}" if settings.log_file else "log_dest stdout"
        ),
    )
    for listener in settings.listeners:
        terminal = listener.kind is ListenerKind.TERMINAL
        text += templates.LISTENER.substitute(
            kind=listener.kind.value,
            tls_note=" (TLS)" if listener.tls else "",
            port=listener.port,
            bind=listener.bind,
            max_connections=listener.max_connections,
            password_file=_path(files.terminal_passwd if terminal else files.service_passwd),
            acl_file=_path(files.terminal_acl if terminal else files.service_acl),
            clientid_line=(templates.CLIENTID_TERMINAL if terminal else templates.CLIENTID_SERVICE),
        )
        if listener.tls:
            assert settings.tls is not None  # BrokerSettings guarantees it
            text += templates.TLS.substitute(
                cafile=_path(settings.tls.cafile),
                certfile=_path(settings.tls.certfile),
                keyfile=_path(settings.tls.keyfile),
            )
    return text


def render_directory(
    directory: Path, accounts: Iterable[Account], settings: BrokerSettings
) -> RenderedConfig:
    """Write the whole config directory; returns where each file is.

    Creates ``directory`` (and the persistence directory) when missing.
    Password-file changes take effect on a running broker after SIGHUP.
    """
    accounts = list(accounts)
    files = layout(directory)
    conf = render_conf(settings, files)
    files.directory.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    terminals = [a for a in accounts if not a.role.is_service]
    services = [a for a in accounts if a.role.is_service]
    _write(files.terminal_passwd, render_password_file(terminals), SECRET_MODE)
    _write(files.service_passwd, render_password_file(services), SECRET_MODE)
    _write(files.terminal_acl, render_terminal_acl(), PUBLIC_MODE)
    _write(files.service_acl, render_service_acl(services), PUBLIC_MODE)
    _write(files.conf, conf, PUBLIC_MODE)
    return files


def write_accounts(files: RenderedConfig, accounts: Iterable[Account]) -> None:
    """Replace only the password files and service ACL (for a SIGHUP reload)."""
    accounts = list(accounts)
    services = [a for a in accounts if a.role.is_service]
    _write(
        files.terminal_passwd,
        render_password_file(a for a in accounts if not a.role.is_service),
        SECRET_MODE,
    )
    _write(files.service_passwd, render_password_file(services), SECRET_MODE)
    _write(files.service_acl, render_service_acl(services), PUBLIC_MODE)


def _path(path: Path | None) -> str:
    text = str(Path(path).resolve()) if path is not None else ""
    if not text or any(c.isspace() for c in text):
        raise BrokerConfigError(f"path {text!r} is empty or has whitespace; mosquitto splits it")
    return text


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    # Create with the final mode so a secret is never briefly world-readable.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # umask may have narrowed the create mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
