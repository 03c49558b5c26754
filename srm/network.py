"""Client addresses and networks: who is asking, from which network, and the account's home.

The client address of a request is its TCP peer, or, when the peer is a trusted proxy
(``network.trusted_proxies``), the right-most ``X-Forwarded-For`` address that is not itself
a trusted proxy (API.md, "Households"). Its network is the address cut to
``network.ipv4_prefix`` or ``network.ipv6_prefix`` bits.

Bytes, not text, go to the store (docs/households.md gives the figures):
- an address is packed in 4 (IPv4) or 16 (IPv6) bytes; an IPv4-mapped IPv6 address is IPv4;
- a network is 4 bytes (IPv4, the masked address) or 8 (IPv6, the first 64 bits of the masked
  address: prefixes are at most 64), shown with the configured prefix;
- home networks are packed one after another, each as ``<length><prefix><address>``: one
  byte 4 or 16, one byte the prefix length, then the masked address (setup.lua reads them).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
MAX_HOME_NETWORKS = 4


def parse_address(text: str) -> Address | None:
    """The address *text* names (``[v6]`` brackets and an IPv6 zone allowed), IPv4-mapped
    IPv6 as IPv4; None when it is no address."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def pack_address(address: Address | None) -> bytes:
    """An address as the store takes it (b'' for none)."""
    return address.packed if address is not None else b""


def parse_packed(packed: bytes) -> Address | None:
    """The address of pack_address (None for b'' or a value of neither size)."""
    if len(packed) == 4:
        return IPv4Address(packed)
    if len(packed) == 16:
        return IPv6Address(packed)
    return None


@dataclass(frozen=True, slots=True)
class Networks:
    """The [network] settings as behaviour: client addresses and their networks."""

    trusted: tuple[Network, ...] = ()
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56

    @classmethod
    def of(cls, trusted: Iterable[str], ipv4_prefix: int, ipv6_prefix: int) -> Networks:
        return cls(
            tuple(ipaddress.ip_network(c.strip(), strict=False) for c in trusted),
            ipv4_prefix,
            ipv6_prefix,
        )

    def is_trusted(self, address: Address) -> bool:
        return any(address in net for net in self.trusted if net.version == address.version)

    def client_address(self, peer: str | None, forwarded: Sequence[str]) -> Address | None:
        """The client address of a request from *peer* (the TCP peer's address text, None for
        a peer without one, e.g. a Unix socket) carrying these ``X-Forwarded-For`` header
        values, in the order received. Only a trusted peer's header is believed; a malformed
        one from a trusted peer leaves the peer."""
        address = parse_address(peer) if peer else None
        if address is None or not forwarded or not self.is_trusted(address):
            return address
        hops = [part for value in forwarded for part in value.split(",")]
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                return address  # malformed: nothing in it is believed
            if not self.is_trusted(hop_address):
                return hop_address
        # every hop is a trusted proxy: the left-most one is as near the client as we know
        first = parse_address(hops[0]) if hops else None
        return first or address

    def network_of(self, address: Address) -> Network:
        """The network of *address*: cut to the configured prefix."""
        if isinstance(address, IPv4Address):
            return IPv4Network((address, self.ipv4_prefix), strict=False)
        return IPv6Network((address, self.ipv6_prefix), strict=False)

    def network_bytes(self, address: Address | None) -> bytes:
        """The network of *address* as the store keeps it: 4 or 8 bytes, empty for none."""
        if address is None:
            return b""
        packed = self.network_of(address).network_address.packed
        return packed if len(packed) == 4 else packed[:8]

    def network_text(self, raw: bytes) -> str | None:
        """The CIDR of a network as the store keeps it (network_bytes); None for none or a
        value of neither size."""
        if len(raw) == 4:
            return str(IPv4Network((IPv4Address(raw), self.ipv4_prefix), strict=False))
        if len(raw) == 8:
            address = IPv6Address(raw + bytes(8))
            return str(IPv6Network((address, self.ipv6_prefix), strict=False))
        return None


def parse_home(values: object) -> list[Network]:
    """The home networks of an operator's ``{"networks": [...]}``: 0..4 CIDR strings (host
    bits are cleared: ``203.0.113.7/24`` is ``203.0.113.0/24``), duplicates dropped.
    ValueError with a sentence saying what is wrong."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError("networks must be a list of CIDR strings")
    if len(values) > MAX_HOME_NETWORKS:
        raise ValueError(f"networks holds at most {MAX_HOME_NETWORKS} CIDRs")
    out: list[Network] = []
    for value in values:
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"networks: {value[:64]!r} is not a CIDR") from None
        if net not in out:
            out.append(net)
    return out


def pack_home(networks: Iterable[Network]) -> bytes:
    """Home networks as the store keeps them (see the module docstring)."""
    out = bytearray()
    for net in networks:
        packed = net.network_address.packed
        out += bytes((len(packed), net.prefixlen)) + packed
    return bytes(out)


def unpack_home(raw: bytes) -> list[str]:
    """The CIDRs of packed home networks (a damaged tail is left out)."""
    out, pos = [], 0
    while pos + 2 <= len(raw):
        size, prefix = raw[pos], raw[pos + 1]
        packed = raw[pos + 2 : pos + 2 + size]
        if size not in (4, 16) or len(packed) != size or prefix > size * 8:
            break
        address = IPv4Address(packed) if size == 4 else IPv6Address(packed)
        out.append(str(ipaddress.ip_network((address, prefix), strict=False)))
        pos += 2 + size
    return out


def to_bytes(value: str | bytes) -> bytes:
    """A value read from Redis as bytes: the clients decode replies as UTF-8 with
    ``surrogateescape`` (srm/connection.py), which this undoes exactly."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
