"""Broker settings as data: listeners, TLS files, limits, where things live.

Defaults are the production choices; each is explained where it is set.
Construction raises BrokerConfigError for values mosquitto would reject or
misread, so a bad setting fails when the config is rendered, not when the
broker starts on a customer's machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cloud.broker.errors import BrokerConfigError
from protocol.limits import MAX_FRAME_BYTES

# Four protocol frames' worth (16 KiB today): room for topic and properties
# around the largest frame, still small enough that no client makes the
# broker buffer megabytes. Larger packets get the client disconnected (MQTT
# v5 clients are told the limit in CONNACK).
MAX_PACKET_SIZE = 4 * MAX_FRAME_BYTES

_EXPIRY_RE = re.compile(r"[1-9][0-9]*[hdwmy]")

# Where Debian and the upstream packages install the dynamic-security plugin.
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/arm-linux-gnueabihf/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


def find_dynsec_plugin() -> Path:
    """The installed ``mosquitto_dynamic_security.so``; BrokerConfigError if none."""
    for candidate in DYNSEC_PLUGIN_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise BrokerConfigError(
        "mosquitto_dynamic_security.so not found (it ships with the mosquitto package; "
        "`dpkg -L mosquitto | grep dynamic` shows where) - pass its path explicitly"
    )


class ListenerKind(StrEnum):
    TERMINAL = "terminal"
    SERVICE = "service"


@dataclass(frozen=True)
class Listener:
    """One mosquitto listener.

    ``terminal`` listeners accept only terminal accounts and pin the client
    id to the username; ``service`` listeners accept only cloud accounts and
    keep client ids free (several ingest workers share one account).
    """

    kind: ListenerKind
    port: int
    bind: str = "127.0.0.1"
    tls: bool = False
    max_connections: int = -1

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise BrokerConfigError(f"listener port out of range: {self.port}")
        if not self.bind or any(c.isspace() for c in self.bind):
            raise BrokerConfigError(f"bad bind address {self.bind!r}")
        if self.max_connections < -1 or self.max_connections == 0:
            raise BrokerConfigError(f"max_connections must be -1 or > 0: {self.max_connections}")

    @classmethod
    def parse(cls, spec: str) -> Listener:
        """``KIND:BIND:PORT[:tls]``, e.g. ``terminal:0.0.0.0:8883:tls``."""
        parts = spec.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "tls"):
            raise BrokerConfigError(f"listener {spec!r}: expected KIND:BIND:PORT[:tls]")
        try:
            kind = ListenerKind(parts[0])
            port = int(parts[2])
        except ValueError as err:
            raise BrokerConfigError(f"listener {spec!r}: {err}") from err
        return cls(kind, port, parts[1], tls=len(parts) == 4)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS listeners: the CA clients trust, the server cert and key."""

    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class BrokerSettings:
    listeners: tuple[Listener, ...]
    data_dir: Path
    tls: TlsFiles | None = None
    # None: log to stdout (systemd's journal keeps it); else this file.
    log_file: Path | None = None
    # Account mosquitto drops root privileges to; it must be able to read the
    # password and ACL files (they are written mode 0640 for its group).
    user: str = "mosquitto"
    pid_file: Path | None = None
    max_packet_size: int = MAX_PACKET_SIZE
    # Terminals are small: umqtt keeps one QoS 1 message in flight; the
    # cloud's config/cmd downlink is a handful of messages at a time.
    max_inflight_messages: int = 10
    # Per client session. The limit that matters is the ingest workers': while
    # they are down the broker is the only copy of frames it has already
    # PUBACKed to terminals, and Mosquitto silently drops QoS 1 messages past
    # these limits (measured: 1000 dropped 1 in 3 of a 3000-frame backlog).
    # A million frames is ~16 h of a 1000-terminal fleet at one frame/min.
    # Terminals' own queues stay small: config is retained, commands are few.
    max_queued_messages: int = 1_000_000
    max_queued_bytes: int = 512 * 1024 * 1024
    # Sessions of terminals that stay away longer are dropped; on return they
    # get the retained config again and the cloud resends pending commands.
    persistent_client_expiration: str = "14d"
    # Seconds between snapshots of the in-memory store; a crash (not a clean
    # stop, which always saves) loses at most this much queued state.
    autosave_interval: int = 60
    sys_interval: int = 10
    # The dynamic-security plugin (terminal accounts); None: the installed one.
    dynsec_plugin: Path | None = None

    def __post_init__(self) -> None:
        if not self.listeners:
            raise BrokerConfigError("no listeners")
        terminals = [lst for lst in self.listeners if lst.kind is ListenerKind.TERMINAL]
        if len(terminals) > 1:
            # mosquitto 2.0.11 loads the plugin once per listener into one
            # shared state, duplicating every account (fixed in 2.0.16 by
            # refusing the second load): one terminal listener per broker.
            raise BrokerConfigError(
                "one terminal listener per broker: the dynamic-security plugin "
                "can serve only one listener"
            )
        ports = [(lst.bind, lst.port) for lst in self.listeners]
        if len(set(ports)) != len(ports):
            raise BrokerConfigError("two listeners on the same address and port")
        if any(lst.tls for lst in self.listeners) and self.tls is None:
            raise BrokerConfigError("a TLS listener needs TLS files (CA, cert, key)")
        if not 64 <= self.max_packet_size <= 268_435_460:
            raise BrokerConfigError(f"max_packet_size out of range: {self.max_packet_size}")
        if not _EXPIRY_RE.fullmatch(self.persistent_client_expiration):
            raise BrokerConfigError(
                f"persistent_client_expiration {self.persistent_client_expiration!r}: "
                "expected a number and one of h d w m y"
            )
        for name in (
            "max_inflight_messages",
            "max_queued_messages",
            "max_queued_bytes",
            "autosave_interval",
            "sys_interval",
        ):
            if getattr(self, name) < 0:
                raise BrokerConfigError(f"{name} must not be negative")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]*", self.user):
            raise BrokerConfigError(f"bad user name {self.user!r}")

    @property
    def dynsec_file(self) -> Path:
        """The plugin's state: in the persistence directory, which the broker
        may write (the plugin rewrites the file after every change)."""
        return self.data_dir / "dynamic-security.json"
