"""Which addresses webhooks may reach: public ones, and what the operator allows."""

from __future__ import annotations

import socket

import pytest

from cloud.errors import ConfigError
from cloud.notify.netguard import AddressPolicy, Refused


def infos(*addresses):
    out = []
    for a in addresses:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        out.append((family, socket.SOCK_STREAM, 6, "", (a, 443)))
    return out


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "127.8.9.10",
        "::1",
        "10.1.2.3",  # private
        "172.16.0.1",
        "192.168.1.1",
        "fd12:3456::1",
        "169.254.169.254",  # link-local: the cloud metadata service
        "fe80::1",
        "100.100.100.200",  # shared address space (a metadata service too)
        "192.0.0.192",  # a metadata service inside 192.0.0.0/24
        "fd00:ec2::254",
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "ff02::1",
        "0.0.0.0",  # unspecified
        "::",
        "255.255.255.255",
        "240.0.0.1",  # reserved
        "::ffff:10.0.0.1",  # IPv4-mapped private
        "::ffff:127.0.0.1",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_internal_addresses_are_refused(address):
    policy = AddressPolicy()
    with pytest.raises(Refused):
        policy.guard("hooks.example.com", infos(address))


def test_public_addresses_pass_and_only_those_are_dialled():
    policy = AddressPolicy()
    got = policy.guard("hooks.example.com", infos("10.0.0.1", "93.184.215.14", "2606:4700::1"))
    assert [i[4][0] for i in got] == ["93.184.215.14", "2606:4700::1"]


def test_the_operator_allows_named_receivers_and_networks():
    policy = AddressPolicy("10.20.0.0/16, 192.0.2.7, erp.factory.example")
    assert policy.guard("x.example.com", infos("10.20.3.4"))
    assert policy.guard("x.example.com", infos("192.0.2.7"))
    with pytest.raises(Refused):
        policy.guard("x.example.com", infos("10.21.0.1"))
    # A named receiver may live on the site's own network...
    assert policy.guard("ERP.factory.example.", infos("10.99.0.1"))
    # ...but a name is no key to the metadata service.
    with pytest.raises(Refused):
        policy.guard("erp.factory.example", infos("169.254.169.254"))


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "not a host!", "http://x"])
def test_a_bad_allowance_stops_the_process(bad):
    with pytest.raises(ConfigError, match="webhook_allow"):
        AddressPolicy(bad)


def test_refusals_say_nothing_about_the_network():
    with pytest.raises(Refused) as info:
        AddressPolicy().guard("intranet.corp", infos("10.0.0.5"))
    assert "10.0.0.5" not in str(info.value)
    assert str(info.value) == str(Refused())
