"""The key a peer address is counted under, for every per-address limit (HTTP
guessing limits in ``web/``, RTMP admission in ``rtmp/``): one function, so an IPv6
customer is one customer on every port."""

from __future__ import annotations

import ipaddress


def address_key(remote: str | None) -> str:
    """The key an address is counted under: an IPv4 address as it is, an IPv6 address
    by its /64 (one customer line usually gets a whole /64, so counting single IPv6
    addresses would give a guesser 2^64 fresh starts); IPv4-mapped IPv6 as IPv4."""
    if not remote:
        return "-"
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)
