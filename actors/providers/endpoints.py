"""Whether a URL a client gave us may be reached: public addresses only, unless its host is allow-listed.

A push endpoint is chosen by whoever registers a device, so without this check the workers would
POST wherever a client points them: the database, a cloud metadata service, an admin port on
loopback. It is checked at registration and again, resolved anew, before each delivery.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeEndpoint(ValueError):
    """The URL may not be reached; the message says why."""


def check(url: str, allowlist: Collection[str]) -> None:
    """Raise ``UnsafeEndpoint`` unless ``url`` is ``https://`` to public addresses only, or allow-listed.

    A host listed in ``allowlist`` (as written in the URL) may be anything and may use ``http://``.
    """
    host, port, allowed = check_form(url, allowlist)
    if allowed:
        return
    for address in resolve(host, port):
        if not is_public(address):
            raise UnsafeEndpoint(f"{host} is or resolves to {address}, which is not a public address.")


def check_form(url: str, allowlist: Collection[str]) -> tuple[str, int, bool]:
    """What ``check`` judges of ``url`` without resolving it: (host, port, whether allow-listed)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise UnsafeEndpoint(f"Not a valid URL: {exc}.") from None
    allowed = host in allowlist
    if parts.scheme != "https" and not (allowed and parts.scheme == "http"):
        raise UnsafeEndpoint("Must be an absolute https:// URL.")
    if not host:
        raise UnsafeEndpoint("Must name a host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeEndpoint("Must not hold credentials.")
    port = port or (443 if parts.scheme == "https" else 80)
    if not allowed and (literal := resolve_literal(host)) and not is_public(literal[0]):
        raise UnsafeEndpoint(f"{host} is {literal[0]}, which is not a public address.")
    return host, port, allowed


def connect(host: str, port: int, timeout: float, *, allowed: bool) -> socket.socket:
    """A TCP connection to ``host``: to one of the public addresses it resolves to, unless ``allowed``.

    The address connected to is the one judged, so a name that resolves anew to a private address
    between a check and the connection (DNS rebinding) gains nothing.
    """
    if allowed:
        return socket.create_connection((host, port), timeout=timeout)
    addresses = resolve(host, port)
    for address in addresses:
        if not is_public(address):
            raise UnsafeEndpoint(f"{host} is or resolves to {address}, which is not a public address.")
    error: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:
            error = exc
    assert error is not None  # resolve() returns at least one address
    raise error


def resolve_literal(host: str) -> list[Address]:
    """``[address]`` when ``host`` is written as an address, else ``[]``."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        return []


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` names (a literal address is itself); ``UnsafeEndpoint`` when none."""
    if literal := resolve_literal(host):
        return literal
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeEndpoint(f"{host} does not resolve: {exc}.") from None
    # A scoped IPv6 address comes back as "fe80::1%eth0": the zone is not part of the address.
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def is_public(address: Address) -> bool:
    """Routable on the internet: not loopback, private, link-local, shared, reserved, multicast..."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside IPv6 (::ffff:127.0.0.1, 64:ff9b::7f00:1, 2002:7f00:1::) is judged as
        # the IPv4 address it carries.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
