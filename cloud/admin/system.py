"""Accounts, directories and files of an install, under a root directory.

Every function is idempotent: it creates what is missing, corrects owner
and mode of what exists, and says which of the two it did. Paths are
absolute paths of the installed system; :class:`Root` maps them under a
scratch directory (``--root``) so a test can install without touching the
host.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cloud.admin.errors import AdminError

COMMAND_TIMEOUT_S = 300


@dataclass(frozen=True)
class Root:
    """Where the installed system's ``/`` is (``/`` itself in production)."""

    path: Path = Path("/")

    @property
    def is_host(self) -> bool:
        return self.path.resolve() == Path("/")

    def __call__(self, absolute: str) -> Path:
        """The real path of ``absolute`` (``/etc/mimamori``) under this root."""
        return self.path / absolute.lstrip("/")


def ensure_user(name: str, root: Root, home: str = "/nonexistent") -> str:
    """Create system user ``name`` (with its own group) if missing; "created"
    or "kept". Only on the host: a scratch root must name existing users."""
    try:
        pwd.getpwnam(name)
        return "kept"
    except KeyError:
        pass
    if not root.is_host:
        raise AdminError(
            f"user {name!r} does not exist; an install into a scratch root "
            "uses existing accounts (--user, --broker-user)"
        )
    run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            home,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        "useradd",
    )
    return "created"


def group_of(user: str) -> str:
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def ensure_dir(path: Path, mode: int, owner: str = "root", group: str | None = None) -> str:
    """Create ``path`` (and parents) with ``mode``, owned by ``owner:group``."""
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    shutil.chown(path, owner, group or group_of(owner))
    return "kept" if existed else "created"


def write_file(
    path: Path, text: str, mode: int, owner: str = "root", group: str | None = None
) -> str:
    """Replace ``path`` atomically with ``text``; "written" or "unchanged".
    Created with its final mode, so a secret is never readable by others."""
    old = path.read_text(encoding="utf-8") if path.is_file() else None
    if old != text:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    os.chmod(path, mode)
    shutil.chown(path, owner, group or group_of(owner))
    return "unchanged" if old == text else "written"


def run(
    cmd: list[str], what: str, *, stdin: str | None = None, env: dict[str, str] | None = None
) -> str:
    """Run ``cmd``; its stdout, or AdminError with its stderr."""
    try:
        done = subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
            env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise AdminError(f"{what}: {err}") from err
    if done.returncode != 0:
        raise AdminError(f"{what} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AdminError(f"{name} not found: apt-get install {package}")
    return path
