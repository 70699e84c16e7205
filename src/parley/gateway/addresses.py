"""Limits per client address: handshakes, open connections and messages.

Per-user limits stop one account; these stop one machine that makes many
accounts, or that opens sockets without ever authenticating. Two things make
the address trickier than the user:

* Behind a reverse proxy every client has the proxy's address. The proxy's
  own addresses are listed in PARLEY_TRUSTED_PROXIES; for a request from one
  of them the client is the right-most address of `X-Forwarded-For` that is
  not a trusted proxy itself (the left part is whatever the client claimed).
* Addresses in PARLEY_IP_LIMITS_EXEMPT (loopback by default: a proxy on the
  same host, health checks, local tools and benchmarks) are never limited.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from parley.config import Network, Settings
from parley.gateway.ratelimit import RateLimiter


def _address(hop: str) -> str | None:
    """`203.0.113.5`, `203.0.113.5:4711`, `[2001:db8::1]:443` → the bare address."""
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1 : hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:  # IPv4 with a port (an IPv6 address has several colons)
        hop = hop.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


class AddressLimits:
    def __init__(self, settings: Settings) -> None:
        self._exempt = settings.ip_limits_exempt
        self._proxies = settings.trusted_proxies
        self._max_open = settings.max_connections_per_ip
        self._handshakes = RateLimiter(settings.handshake_rate, settings.handshake_burst)
        self._messages = RateLimiter(settings.ip_rate_per_s, settings.ip_rate_burst)
        self._open: Counter[str] = Counter()
        self.is_exempt = lru_cache(maxsize=4096)(self._in(self._exempt))
        self._is_proxy = lru_cache(maxsize=4096)(self._in(self._proxies))

    @staticmethod
    def _in(networks: tuple[Network, ...]) -> Callable[[str], bool]:
        def check(address: str) -> bool:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            return any(ip in net for net in networks)

        return check

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: the peer's, or what trusted proxies forwarded.

        A hop that is no address (`unknown`, garbage) ends the walk at the last
        proxy: nothing further left can be trusted.
        """
        address = peer or "?"
        if forwarded_for is None or not self._proxies or not self._is_proxy(address):
            return address
        for raw in reversed(forwarded_for.split(",")):
            hop = _address(raw)
            if hop is None:
                return address
            if not self._is_proxy(hop):
                return hop
            address = hop
        return address

    def allow_handshake(self, address: str) -> bool:
        return self.is_exempt(address) or self._handshakes.allow(address)

    def allow_message(self, address: str) -> bool:
        return self.is_exempt(address) or self._messages.allow(address)

    def open(self, address: str) -> bool:
        """Count a new connection, unless the address already has its maximum open."""
        if not self.is_exempt(address) and self._open[address] >= self._max_open:
            return False
        self._open[address] += 1
        return True

    def close(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]
