"""Running an install's systemd units without systemd, for the deploy test.

:func:`read_unit` parses a unit file the way systemd reads the parts this
project uses (``ExecStart`` with ``\\`` continuations, ``Environment``,
``EnvironmentFile``, ``WorkingDirectory``, ``User``) and expands the
specifiers ``%i``, ``%H`` and ``%%``; :func:`start_unit` runs it as a
:class:`cloud.demo.procs.Child` with exactly that environment (plus
``PATH``), so a process started here sees what it would see under systemd.
The test runs as one user: ``User=`` is read and checked, not switched to.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

from cloud.admin import envfile
from cloud.demo.procs import Child


@dataclass(frozen=True)
class Unit:
    name: str
    argv: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: list[Path] = field(default_factory=list)
    working_directory: Path | None = None
    user: str = "root"


def _expand(text: str, instance: str) -> str:
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "%" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"i": instance, "H": socket.gethostname(), "%": "%"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def read_unit(path: Path, instance: str = "") -> Unit:
    """The [Service] section of unit file ``path`` (instance ``instance`` of a
    template unit); KeyError for a specifier this parser does not know."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + raw.strip()
        else:
            lines.append(raw.strip())
    section, values = "", {}
    env: dict[str, str] = {}
    files: list[Path] = []
    for line in lines:
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]":
            continue
        key, _, value = line.partition("=")
        value = _expand(value.strip(), instance)
        if key == "Environment":
            for pair in shlex.split(value):
                name, _, val = pair.partition("=")
                env[name] = val
        elif key == "EnvironmentFile":
            files.append(Path(value.lstrip("-")))
        else:
            values[key] = value
    name = path.name.replace("@.", f"@{instance}.") if instance else path.name
    return Unit(
        name=name,
        argv=shlex.split(values["ExecStart"]),
        environment=env,
        environment_files=files,
        working_directory=Path(values["WorkingDirectory"])
        if "WorkingDirectory" in values
        else None,
        user=values.get("User", "root"),
    )


def unit_environment(unit: Unit) -> dict[str, str]:
    """What systemd gives the process: its files, then ``Environment=``, plus PATH."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for file in unit.environment_files:
        env.update(envfile.read(file))
    env.update(unit.environment)
    return env


def start_unit(unit: Unit, log_dir: Path) -> Child:
    """Start ``unit``'s ExecStart as systemd would (environment, directory)."""
    child = Child(
        unit.name,
        unit.argv,
        log_dir / f"{unit.name}.log",
        env=unit_environment(unit),
        cwd=unit.working_directory or Path("/"),
    )
    return child.start()
