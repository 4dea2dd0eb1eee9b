"""The broker's TLS files from the operator's CA, with the ``openssl`` command.

The operator gives the CA certificate terminals trust and either its key
(the install issues the broker's certificate itself, naming the public host
terminals use and the host the cloud's processes use, ``localhost`` on the
broker's machine) or a certificate and key made elsewhere that name both. Files go to the
broker's configuration directory; the key is readable by the broker's
group only. A rerun keeps a certificate that still chains to the CA, names
every host and is valid for 30 more days.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloud.admin.errors import AdminError
from cloud.admin.system import require_tool, run, write_file

DAYS = 825  # the longest TLS server certificate lifetime clients still accept
RENEW_S = 30 * 86400


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def install(
    directory: Path,
    *,
    ca: Path,
    names: list[str],
    group: str,
    ca_key: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[TlsFiles, str]:
    """Put ``ca.pem``, ``server.pem`` and ``server.key`` in ``directory``;
    (their paths, what was done). The certificate must name every one of
    ``names`` (host names or IP addresses; the first is its CN). Raises
    :class:`AdminError` for missing or mismatched inputs."""
    openssl = require_tool("openssl", "openssl")
    if (ca_key is None) == (cert is None or key is None):
        raise AdminError(
            "give --tls-ca-key (the install issues the broker's certificate) "
            "or --tls-cert and --tls-key, not both"
        )
    for label, path in (
        ("--tls-ca", ca),
        ("--tls-ca-key", ca_key),
        ("--tls-cert", cert),
        ("--tls-key", key),
    ):
        if path is not None and not path.is_file():
            raise AdminError(f"{label} {path}: no such file")
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    write_file(files.ca, ca.read_text(encoding="utf-8"), 0o644)
    if cert is not None and key is not None:
        write_file(files.cert, cert.read_text(encoding="utf-8"), 0o644)
        write_file(files.key, key.read_text(encoding="utf-8"), 0o640, group=group)
        _check(openssl, files, names)
        return files, "given certificate installed"
    if files.cert.is_file() and files.key.is_file():
        try:
            _check(openssl, files, names)
            return files, "certificate kept"
        except AdminError:
            pass
    assert ca_key is not None
    _issue(openssl, files, ca_key, names, group)
    return files, "certificate issued"


def _check(openssl: str, files: TlsFiles, names: list[str]) -> None:
    """AdminError unless the certificate chains to the CA, is valid for
    :data:`RENEW_S` more and names every one of ``names``."""
    cert = str(files.cert)
    run([openssl, "verify", "-CAfile", str(files.ca), cert], "the broker's certificate")
    try:
        run([openssl, "x509", "-noout", "-checkend", str(RENEW_S), "-in", cert], "checkend")
    except AdminError as err:
        raise AdminError(
            f"the broker's certificate expires within {RENEW_S // 86400} days"
        ) from err
    for name in names:
        flag = "-checkip" if name.replace(".", "").isdigit() else "-checkhost"
        out = run([openssl, "x509", "-noout", flag, name, "-in", cert], "name check")
        if "does NOT match" in out:
            raise AdminError(f"the broker's certificate does not name {name}")


def _issue(openssl: str, files: TlsFiles, ca_key: Path, names: list[str], group: str) -> None:
    alt = ",".join(
        f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in dict.fromkeys(names)
    )
    with tempfile.TemporaryDirectory(prefix="mimamori-tls-") as tmp:
        work = Path(tmp)
        (work / "server.ext").write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            f"subjectAltName={alt}\n"
        )
        run(
            [
                openssl,
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(work / "server.key"),
                "-out",
                str(work / "server.csr"),
                "-subj",
                f"/CN={names[0]}",
            ],
            "openssl req",
        )
        run(
            [
                openssl,
                "x509",
                "-req",
                "-in",
                str(work / "server.csr"),
                "-CA",
                str(files.ca),
                "-CAkey",
                str(ca_key),
                "-set_serial",
                f"0x{secrets.token_hex(16)}",
                "-days",
                str(DAYS),
                "-sha256",
                "-extfile",
                str(work / "server.ext"),
                "-out",
                str(work / "server.pem"),
            ],
            "openssl x509 (signing with the CA key)",
        )
        write_file(files.key, (work / "server.key").read_text(), 0o640, group=group)
        write_file(files.cert, (work / "server.pem").read_text(), 0o644)
