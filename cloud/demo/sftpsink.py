"""An SFTP server for the demo: the customer's file server that forwarded CSV files land on.

    python -m cloud.demo.sftpsink --root build/demo/sftp --host-key build/demo/sftp-host.key
                                  --authorized-keys build/demo/sftp-authorized_keys
                                  [--user demo] [--host 127.0.0.1] [--port 0]

AsyncSSH's SFTP server (https://asyncssh.readthedocs.io/, ``SFTPServer``)
with its virtual chroot at ``--root``: the path ``/incoming`` of an
``sftp://demo@127.0.0.1:<port>/incoming`` endpoint is ``<root>/incoming``.
Only SFTP is served (no shell, no command, no port forwarding), only to
``--user``, only with a public key listed in ``--authorized-keys`` (read at
each login, so a key made with *New key* on the endpoint's page works once
its line is added to the file), never with a password. The host key is
Ed25519, made (mode 0600) when ``--host-key`` does not exist yet.

Once listening it prints ``sftp HOST:PORT``, ``host-key <type> <base64>``
(the line an endpoint pins) and ``ready``, then ``file <path> (<n> bytes)``
for every file an upload renames into place (the forwarder writes
``.<name>.part`` and renames it). SIGINT or SIGTERM stop it (exit 0); a
port that cannot be opened exits 2. Bind it to loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh still names DSA types, which cryptography deprecates at import:
    # nothing the demo uses, and noise in its log.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh


def host_key(path: Path) -> asyncssh.SSHKey:
    """The server's key at ``path``, made there (0600) when missing."""
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
    return asyncssh.read_private_key(path)


def public_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA...``: what ``ssh-keyscan`` shows for this server."""
    return " ".join(key.export_public_key("openssh").decode("ascii").split()[:2])


class _Server(asyncssh.SSHServer):
    """Public-key logins of one user, keys read from a file at each login."""

    def __init__(self, user: str, keys_file: Path) -> None:
        self.user = user
        self.keys_file = keys_file
        self.keys: set[bytes] = set()

    def begin_auth(self, username: str) -> bool:
        self.keys = set()
        try:
            lines = self.keys_file.read_text(encoding="ascii").splitlines()
        except OSError:
            lines = []
        for line in lines:
            if line.strip() and not line.startswith("#"):
                try:
                    self.keys.add(asyncssh.import_public_key(line).public_data)
                except (asyncssh.KeyImportError, ValueError):
                    continue  # a bad line keeps nobody out but its own key
        return True  # authentication is always required

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.user and key.public_data in self.keys


class _Files(asyncssh.SFTPServer):
    """The SFTP file system under ``root``; says which files arrived."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path) -> None:
        super().__init__(chan, chroot=os.fsencode(root))

    def _arrived(self, newpath: bytes) -> None:
        local = Path(os.fsdecode(self.map_path(newpath)))
        try:
            size = local.stat().st_size
        except OSError:
            return
        print(f"file {local} ({size} bytes)", flush=True)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        super().posix_rename(oldpath, newpath)
        self._arrived(newpath)


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> int:
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    key = host_key(args.host_key)
    try:
        server = await asyncssh.create_server(
            lambda: _Server(args.user, args.authorized_keys),
            args.host,
            args.port,
            server_host_keys=[key],
            sftp_factory=lambda chan: _Files(chan, root),
            allow_scp=False,
            agent_forwarding=False,
            x11_forwarding=False,
        )
    except OSError as err:
        print(f"error: SFTP server could not listen on {args.host}:{args.port}: {err}",
              file=sys.stderr)  # fmt: skip
        return 2
    port = server.sockets[0].getsockname()[1]
    print(f"sftp {args.host}:{port}", flush=True)
    print(f"host-key {public_line(key)}", flush=True)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cloud.demo.sftpsink",
        description="SFTP server (public-key logins of one user) that keeps uploaded files.",
    )
    p.add_argument("--root", type=Path, required=True, help="the served directory tree")
    p.add_argument("--host-key", type=Path, required=True, help="Ed25519 host key (made if absent)")
    p.add_argument("--authorized-keys", type=Path, required=True, help="allowed public keys")
    p.add_argument("--user", default="demo", help="the one login name (default %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    args = p.parse_args(argv)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await serve(args, stop)

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
