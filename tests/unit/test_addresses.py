"""Whose address a request is, for the per-address limits (gateway/addresses.py)."""

from __future__ import annotations

from parley.config import load_settings
from parley.gateway.addresses import AddressLimits


def limits(**env: str) -> AddressLimits:
    return AddressLimits(load_settings({"PARLEY_JWT_SECRET": "s", **env}))


def test_the_peer_is_the_client_without_trusted_proxies() -> None:
    assert limits().client("198.51.100.1", "203.0.113.9") == "198.51.100.1"


def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() -> None:
    behind = limits(PARLEY_TRUSTED_PROXIES="10.0.0.0/8")
    assert behind.client("10.0.0.2", "203.0.113.9") == "203.0.113.9"
    assert behind.client("10.0.0.2", "1.2.3.4, 203.0.113.9, 10.0.0.7") == "203.0.113.9"
    assert behind.client("10.0.0.2", " 203.0.113.9:4711 ") == "203.0.113.9"
    assert behind.client("10.0.0.2", "[2001:db8::1]:443") == "2001:db8::1"
    assert behind.client("10.0.0.2", "2001:db8::1") == "2001:db8::1"
    # Garbage ends the walk at the last proxy; so does a header with only proxies.
    assert behind.client("10.0.0.2", "unknown") == "10.0.0.2"
    assert behind.client("10.0.0.2", "203.0.113.9, unknown") == "10.0.0.2"
    assert behind.client("10.0.0.2", "10.0.0.5, 10.0.0.6") == "10.0.0.5"
    # A request that does not come from a proxy is its own client, whatever it claims.
    assert behind.client("198.51.100.1", "203.0.113.9") == "198.51.100.1"


def test_open_connections_are_counted_per_address_and_loopback_is_exempt() -> None:
    capped = limits(PARLEY_MAX_CONNECTIONS_PER_IP="2")
    assert capped.open("198.51.100.1") and capped.open("198.51.100.1")
    assert not capped.open("198.51.100.1")
    assert capped.open("198.51.100.2")
    capped.close("198.51.100.1")
    assert capped.open("198.51.100.1")
    assert all(capped.open("127.0.0.1") for _ in range(5))
    assert all(capped.allow_message("::1") for _ in range(10_000))
