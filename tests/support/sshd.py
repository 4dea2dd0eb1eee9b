"""A real OpenSSH server (Debian's ``openssh-server``) on a free loopback port,
with its own host key and one authorized key, as a non-daemon child:

    with SshServer(tmp_path, authorized_key="ssh-ed25519 AAAA... fwd") as server:
        server.port, server.host_key, server.directory

It serves SFTP (``internal-sftp``) to the user running the tests; files land
in ``server.directory``. A missing ``sshd`` is an error naming the package.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.demo.procs import Child, free_port

SSHD = "/usr/sbin/sshd"


def host_keypair(path: Path) -> str:
    """Write a new Ed25519 host key at ``path``; return its public line."""
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


class SshServer:
    def __init__(self, root: Path, authorized_key: str) -> None:
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError("sshd missing: apt-get install -y openssh-server")
        self.root = root
        self.user = getpass.getuser()
        self.directory = root / "inbox"
        self.authorized_key = authorized_key
        self.port = 0
        self.host_key = ""
        self._child: Child | None = None

    def __enter__(self) -> SshServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host_key = host_keypair(self.root / "host_ed25519")
        keys = self.root / "authorized_keys"
        keys.write_text(self.authorized_key + "\n")
        keys.chmod(0o600)
        self.port = free_port()
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.root / 'host_ed25519'}",
                    f"AuthorizedKeysFile {keys}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            # As root sshd separates privileges into an empty directory that
            # the service unit would make; a test run makes it instead.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        argv = [SSHD, "-D", "-e", "-f", str(config)]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._child = Child("sshd", argv, self.root / "sshd.log", env=env, cwd=self.root).start()
        self._child.wait_port("127.0.0.1", self.port, 10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            self._child.stop()

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")
