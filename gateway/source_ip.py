"""Who really sent a request, for the webhooks that are authenticated by their source address.

X-Forwarded-For is written by whoever sends it, so only hops appended by our own proxies are
believed: starting from the TCP peer, walk the header right to left while the address is a trusted
proxy; the first address that is not one is the client. A peer that is not a trusted proxy is the
client itself, whatever header it sends. Anything unparsable believes nothing (None).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str | None) -> Address | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the allow-lists are IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted_proxies: Sequence[Network]
) -> Address | None:
    """The client's address: `peer` unless it is a trusted proxy, then the right-most
    untrusted hop of `forwarded_for` (every X-Forwarded-For header value, in order)."""
    address = parse_address(peer)
    if address is None or not within(address, trusted_proxies):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return None
        if not within(address, trusted_proxies):
            return address
    # Every hop is one of our proxies: the request began inside, so it is not the provider's.
    return address
