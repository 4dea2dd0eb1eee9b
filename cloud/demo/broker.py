"""The demo's MQTT broker: Mosquitto with the configuration the project ships.

The config comes from :mod:`cloud.broker` (per-terminal passwords, ACL), with
two plain loopback listeners on free ports: terminals and cloud services.
No TLS: everything stays on 127.0.0.1 (a field listener is ``terminal:...:tls``).

Only Mosquitto: the ingest needs MQTT v5 shared subscriptions and
manual acknowledgement, which the embedded Python brokers (amqtt speaks
MQTT 3.1.1 only) do not offer.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cloud.broker import Account, BrokerSettings, Listener, ListenerKind, render_directory
from cloud.demo.procs import Child

HOST = "127.0.0.1"


class BrokerMissing(RuntimeError):
    """No mosquitto binary; the message says how to install it."""


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if path is None:
        raise BrokerMissing(
            "mosquitto not found: install it (apt-get install -y mosquitto, "
            "or `make system-deps` as root) and run the demo again"
        )
    return path


@dataclass(frozen=True)
class BrokerPorts:
    terminal: int
    service: int


def broker_child(
    workdir: Path, accounts: Iterable[Account], ports: BrokerPorts, env: dict[str, str], cwd: Path
) -> Child:
    """Render the config into ``workdir`` and return the (not started) child."""
    settings = BrokerSettings(
        listeners=(
            Listener(ListenerKind.TERMINAL, ports.terminal, HOST),
            Listener(ListenerKind.SERVICE, ports.service, HOST),
        ),
        data_dir=workdir / "data",
        log_file=workdir / "mosquitto.log",
        # As root mosquitto would switch to the "mosquitto" user, which cannot
        # read the run's directory; stay whoever runs the demo.
        user=pwd.getpwuid(os.getuid()).pw_name,
    )
    files = render_directory(workdir / "conf", accounts, settings)
    return Child(
        "broker",
        [find_mosquitto(), "-c", str(files.conf)],
        workdir / "mosquitto.stderr.log",
        env=env,
        cwd=cwd,
    )
