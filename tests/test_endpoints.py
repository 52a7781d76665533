"""Client-given URLs reach public addresses only, unless the operator allow-listed the host."""

from __future__ import annotations

import ipaddress

import pytest

from actors.providers.endpoints import UnsafeEndpoint, check, is_public

REFUSED = [
    "https://127.0.0.1/push",
    "https://127.1.2.3:8443/push",
    "https://localhost/push",
    "https://[::1]/push",
    "https://10.0.0.5/x",
    "https://172.16.0.1/x",
    "https://192.168.1.1/x",
    "https://169.254.169.254/latest/meta-data",  # the cloud metadata service
    "https://[fe80::1]/x",
    "https://[fc00::1]/x",
    "https://100.64.0.1/x",  # shared address space (carrier-grade NAT)
    "https://0.0.0.0/x",
    "https://224.0.0.1/x",
    "https://240.0.0.1/x",
    "https://[::ffff:127.0.0.1]/x",  # loopback inside IPv6
    "https://[64:ff9b::a00:1]/x",  # 10.0.0.1 through NAT64
    "https://[2002:7f00:1::]/x",  # 127.0.0.1 through 6to4
    "https://0x7f000001/x",  # 127.0.0.1 written as one hex number
    "https://2130706433/x",  # and as one decimal number
]


@pytest.mark.parametrize("url", REFUSED)
def test_non_public_addresses_are_refused(url):
    with pytest.raises(UnsafeEndpoint, match=r"not a public address|does not resolve"):
        check(url, allowlist=frozenset())


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://push.example.com/x", "https://"),
        ("ftp://push.example.com/x", "https://"),
        ("/relative/path", "https://"),
        ("https:///no-host", "host"),
        ("https://user:secret@93.184.215.14/x", "credentials"),
        ("https://93.184.215.14:99999/x", "valid URL"),
    ],
)
def test_malformed_or_plain_http_urls_are_refused(url, why):
    with pytest.raises(UnsafeEndpoint, match=why):
        check(url, allowlist=frozenset())


def test_a_public_address_is_allowed():
    check("https://93.184.215.14/push/abc", allowlist=frozenset())
    check("https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/push", allowlist=frozenset())


def test_an_allow_listed_host_is_compared_as_written():
    check("http://localhost:8080/push", allowlist=frozenset({"localhost"}))
    check("https://127.0.0.1/push", allowlist=frozenset({"127.0.0.1"}))
    with pytest.raises(UnsafeEndpoint):
        check("https://127.0.0.1/push", allowlist=frozenset({"localhost"}))
    with pytest.raises(UnsafeEndpoint):
        check("https://localhost/push", allowlist=frozenset({"127.0.0.1"}))


def test_a_name_is_judged_by_every_address_it_resolves_to():
    # localhost resolves to loopback on every machine; one non-public address is enough to refuse.
    with pytest.raises(UnsafeEndpoint, match="localhost is or resolves to"):
        check("https://localhost/x", allowlist=frozenset())


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("::ffff:8.8.8.8", True),
        ("::", False),
        ("::1", False),
    ],
)
def test_is_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public
