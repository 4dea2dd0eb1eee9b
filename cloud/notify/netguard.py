"""Which addresses webhooks and forwarding may reach (server-side request forgery).

Customers choose webhook and forwarding URLs, and the pages show how each
attempt went; without a check, a customer could make the service probe its
own network: the loopback interface, the private networks it runs in, the
cloud provider's metadata service. So a destination must be a *public*
address:

- refused: every address that is not globally routable (Python's
  ``ipaddress.is_global``: loopback, RFC 1918 private, link-local, unique
  local, shared address space, unspecified, reserved, documentation ranges),
  every multicast address, the metadata services that sit at otherwise
  routable addresses (:data:`METADATA`), and IPv6 addresses that embed a
  refused IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64);
- allowed anyway, by the operator (``webhook_allow``, comma-separated):
  networks in CIDR form (``10.20.0.0/16``) or single addresses, and host
  names of on-premises receivers (``erp.factory.example``), which may then
  resolve to private addresses (never to a metadata service, unless a
  network entry covers it).

The check runs on the addresses a name resolves to, when a URL is saved
(:meth:`AddressPolicy.check_url`) and again when the worker connects
(:meth:`AddressPolicy.guard`, given to :func:`cloud.notify.netio.open_connection`),
on the very addresses it then dials: a name that resolves to a public
address at save time and to an internal one later (DNS rebinding) is
refused at connect time.

A refusal says the same whether the name did not resolve or resolved to a
refused address, and never names the address: the customer learns nothing
about the network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from cloud.errors import ConfigError
from cloud.notify.errors import UnreachableError
from cloud.notify.netio import AddrInfo, Deadline, DeadlineExceeded, resolve

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services at addresses is_global does not already refuse
# (169.254.169.254, fd00:ec2::254 and 100.100.100.200 are not global anyway).
METADATA = frozenset({ipaddress.ip_address("192.0.0.192")})  # Oracle Cloud
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_HOST_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}$")


class Refused(UnreachableError):
    """The destination is not a public address, or could not be resolved."""

    def __init__(self) -> None:
        super().__init__("destination not found or not allowed")


def embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for net in _NAT64:
        if address in net:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True for an address a customer's server may have on the internet."""
    inner = embedded_v4(address)
    if inner is not None and not is_public(inner):
        return False
    return address.is_global and not address.is_multicast and address not in METADATA


class AddressPolicy:
    """Public addresses, plus the operator's allowance (see the module docstring).

    Raises :class:`ConfigError` naming ``webhook_allow`` for an entry that is
    neither a network nor a host name.
    """

    def __init__(self, allow: str = "") -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for raw in allow.split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not _HOST_NAME.match(entry) or entry.replace(".", "").isdigit():
                raise ConfigError(f"webhook_allow: {raw.strip()!r} is neither a network nor a host")
            self.names.add(entry)

    def permits(self, host: str, address: IPAddress) -> bool:
        if any(address in net for net in self.networks):
            return True
        if host.lower().rstrip(".") in self.names:
            return address not in METADATA and not address.is_link_local
        return is_public(address)

    def guard(self, host: str, infos: list[AddrInfo]) -> list[AddrInfo]:
        """The resolved addresses of ``host`` that may be dialled; raises
        :class:`Refused` if none may."""
        allowed = [i for i in infos if self.permits(host, _address_of(i))]
        if not allowed:
            raise Refused()
        return allowed

    def check_url(self, url: str, timeout_s: float = 3.0) -> None:
        """Save-time check of an http(s) URL: its host must resolve, within
        ``timeout_s``, to addresses that are all allowed. A host the operator
        allowed by name passes unresolved (it may resolve only where the
        worker runs); the worker checks its addresses when it connects.
        Raises :class:`Refused`."""
        parts = urlsplit(url)
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise Refused()
        if host.rstrip(".") in self.names:
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            infos = resolve(host, port, Deadline(timeout_s))
        except (OSError, ValueError, DeadlineExceeded) as err:
            raise Refused() from err
        if not infos or any(not self.permits(host, _address_of(i)) for i in infos):
            raise Refused()


def _address_of(info: AddrInfo) -> IPAddress:
    # getaddrinfo gives "fe80::1%eth0" for scoped addresses; the scope is no
    # part of the address.
    text = str(info[4][0]).split("%", 1)[0]
    address = ipaddress.ip_address(text)
    if info[0] not in (socket.AF_INET, socket.AF_INET6):
        raise Refused()
    return address
