"""Client addresses, networks and home networks as srm/network.py computes and packs them."""

from __future__ import annotations

import ipaddress

import pytest

from srm import network
from srm.network import Networks

BEHIND_LB = Networks.of(["10.0.0.0/8", "2001:db8:ff::/48"], 24, 56)


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() -> None:
    nets = Networks.of([], 24, 56)
    assert str(nets.client_address("198.51.100.7", ["203.0.113.9"])) == "198.51.100.7"


def test_a_peer_outside_the_trusted_proxies_cannot_choose_its_address() -> None:
    assert str(BEHIND_LB.client_address("198.51.100.7", ["203.0.113.9"])) == "198.51.100.7"


def test_behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_client() -> None:
    # a client may prepend anything; the proxies append what they saw
    got = BEHIND_LB.client_address("10.0.0.2", ["6.6.6.6, 203.0.113.9, 10.0.0.1"])
    assert str(got) == "203.0.113.9"


def test_several_header_lines_are_one_list_in_their_order() -> None:
    got = BEHIND_LB.client_address("10.0.0.2", ["6.6.6.6", "203.0.113.9", "10.0.0.1"])
    assert str(got) == "203.0.113.9"


@pytest.mark.parametrize("header", ["203.0.113.9, not-an-ip", "", " , ", "203.0.113.9:80"])
def test_a_malformed_header_from_a_trusted_proxy_leaves_the_peer(header: str) -> None:
    assert str(BEHIND_LB.client_address("10.0.0.2", [header])) == "10.0.0.2"


def test_when_every_hop_is_trusted_the_left_most_is_the_nearest_known() -> None:
    assert str(BEHIND_LB.client_address("10.0.0.2", ["10.9.9.9, 10.0.0.1"])) == "10.9.9.9"


def test_ipv6_peers_brackets_zones_and_mapped_ipv4() -> None:
    assert str(BEHIND_LB.client_address("2001:db8:ff::1", ["[2001:db8:5::7]"])) == "2001:db8:5::7"
    assert str(network.parse_address("fe80::1%eth0")) == "fe80::1"
    assert str(network.parse_address("::ffff:203.0.113.9")) == "203.0.113.9"
    assert BEHIND_LB.client_address(None, ["203.0.113.9"]) is None  # a Unix socket peer


def test_a_network_is_four_or_eight_bytes_and_shows_with_the_configured_prefix() -> None:
    nets = Networks.of([], 24, 56)
    v4 = nets.network_bytes(ipaddress.ip_address("203.0.113.77"))
    v6 = nets.network_bytes(ipaddress.ip_address("2001:db8:5:1ff:1::9"))
    assert (len(v4), len(v6)) == (4, 8)
    assert nets.network_text(v4) == "203.0.113.0/24"
    assert nets.network_text(v6) == "2001:db8:5:100::/56"
    assert nets.network_bytes(None) == b""
    assert nets.network_text(b"") is None
    assert nets.network_text(b"abc") is None


def test_home_networks_round_trip_through_their_packing() -> None:
    home = network.parse_home(["203.0.113.7/24", "2001:db8:5::/56", "10.0.0.0/8"])
    assert network.unpack_home(network.pack_home(home)) == [
        "203.0.113.0/24",
        "2001:db8:5::/56",
        "10.0.0.0/8",
    ]
    assert network.unpack_home(network.pack_home(home) + b"\x04") == [str(n) for n in home]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("203.0.113.0/24", "list"),
        (["a", "b", "c", "d", "e"], "at most 4"),
        (["300.1.1.1/8"], "not a CIDR"),
        ([5], "list"),
    ],
)
def test_bad_home_networks_are_refused_with_a_sentence(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        network.parse_home(value)


def test_surrogate_escaped_replies_give_back_the_exact_bytes() -> None:
    raw = bytes(range(256))
    assert network.to_bytes(raw.decode("utf-8", "surrogateescape")) == raw
