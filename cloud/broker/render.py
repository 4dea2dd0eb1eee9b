"""Render a complete mosquitto configuration directory.

    <out>/mosquitto.conf       main config, absolute paths to everything below
    <out>/services.passwd      cloud service accounts (mode 0640)
    <out>/services.acl         per-service user ACL
    <data>/dynamic-security.json  terminal accounts and the reconciler's admin
                               account: the plugin's state (mode 0640), seeded
                               once; the broker owns it from then on

TLS files and the persistence directory are referenced, never copied. Files
are replaced atomically (write to a temporary name, then rename), so a
broker reloading on SIGHUP never reads half a password file. Rendering the
same inputs twice gives the same files except for hashes made from
plaintext, which get a fresh salt. The plugin's file is written only when
it does not exist (or ``reseed``): once the broker runs, it holds the live
accounts and the cloud changes them over ``$CONTROL`` (:mod:`cloud.brokersync`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cloud.broker import dynsec, templates
from cloud.broker.accounts import Account, Role, render_password_file
from cloud.broker.acl import render_service_acl
from cloud.broker.errors import BrokerConfigError
from cloud.broker.settings import BrokerSettings, ListenerKind, find_dynsec_plugin

SECRET_MODE = 0o640
PUBLIC_MODE = 0o644


@dataclass(frozen=True)
class RenderedConfig:
    """Where the rendered files are; ``conf`` is what ``mosquitto -c`` takes."""

    directory: Path
    conf: Path
    service_passwd: Path
    service_acl: Path
    dynsec: Path


def layout(directory: Path, settings: BrokerSettings) -> RenderedConfig:
    directory = directory.resolve()
    return RenderedConfig(
        directory=directory,
        conf=directory / "mosquitto.conf",
        service_passwd=directory / "services.passwd",
        service_acl=directory / "services.acl",
        dynsec=settings.dynsec_file.resolve(),
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
        if terminal:
            auth = templates.DYNSEC.substitute(
                plugin=_path(settings.dynsec_plugin or find_dynsec_plugin()),
                config_file=_path(files.dynsec),
            )
        else:
            auth = templates.PASSWORD_FILE.substitute(
                password_file=_path(files.service_passwd), acl_file=_path(files.service_acl)
            )
        text += templates.LISTENER.substitute(
            kind=listener.kind.value,
            tls_note=" (TLS)" if listener.tls else "",
            port=listener.port,
            bind=listener.bind,
            max_connections=listener.max_connections,
            auth_lines=auth,
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
    directory: Path,
    accounts: Iterable[Account],
    settings: BrokerSettings,
    *,
    reseed: bool = False,
) -> RenderedConfig:
    """Write the whole config directory; returns where each file is.

    Creates ``directory`` (and the persistence directory) when missing.
    Service password-file changes take effect on a running broker after
    SIGHUP. Terminal and admin accounts seed the plugin's file when it does
    not exist yet, or always with ``reseed`` (the broker must be stopped
    then: it rewrites the file from memory after every change).
    """
    accounts = list(accounts)
    files = layout(directory, settings)
    conf = render_conf(settings, files)
    files.directory.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    write_accounts(files, accounts)
    if reseed or not files.dynsec.exists():
        write_dynsec_seed(files, accounts)
    _write(files.conf, conf, PUBLIC_MODE)
    return files


def write_accounts(files: RenderedConfig, accounts: Iterable[Account]) -> None:
    """Replace only the service password file and ACL (for a SIGHUP reload)."""
    services = [a for a in accounts if a.role.is_service]
    _write(files.service_passwd, render_password_file(services), SECRET_MODE)
    _write(files.service_acl, render_service_acl(services), PUBLIC_MODE)


def write_dynsec_seed(files: RenderedConfig, accounts: Iterable[Account]) -> None:
    """Write the plugin's file from the terminal and admin accounts (hashes only)."""
    accounts = list(accounts)
    admin = [a.password_hash for a in accounts if a.role is Role.ADMIN]
    seed = dynsec.seed_config(
        admin[0] if admin else None,
        ((a.username, a.password_hash, True) for a in accounts if a.role is Role.TERMINAL),
    )
    _write(files.dynsec, json.dumps(seed, indent=1) + "\n", SECRET_MODE)


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
