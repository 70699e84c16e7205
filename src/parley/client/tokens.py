"""Where the client's JWT comes from: a fixed string, or a provider called again when needed.

A provider is any callable returning a token, plain or awaitable, e.g.
`lambda: os.environ["PARLEY_TOKEN"]` or an `async def` that asks an auth
service. It is called on first use, when the cached token has expired (read
from the token's own `exp`, without checking its signature: only the server
can do that), and when the server refused the token (HTTP 401 at the
handshake, close 4401, a REST 401).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from parley.client.errors import Unauthorized

TokenProvider = Callable[[], str | Awaitable[str]]
REFRESH_MARGIN_S = 5.0


def token_claims(token: str) -> dict[str, Any] | None:
    """The unverified claims of a JWT, or None if it does not look like one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class TokenSource:
    """Hands out a token that is not known to be expired; shared by WebSocket and REST.

    A token is renewed `REFRESH_MARGIN_S` before its `exp` (at most a quarter
    of its lifetime before, so that a 2-second test token is not renewed at
    every use).
    """

    def __init__(
        self, token: str | TokenProvider, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._fixed = token if isinstance(token, str) else None
        self._provider = None if isinstance(token, str) else token
        self._clock = clock
        self._current: str | None = self._fixed
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the provider was called (for tests and metrics)

    @property
    def refreshable(self) -> bool:
        return self._provider is not None

    def _fresh(self, token: str) -> bool:
        claims = token_claims(token)
        if claims is None:
            return True  # not a JWT we can read: let the server judge it
        exp = _number(claims, "exp")
        if exp is None:
            return True
        iat = _number(claims, "iat")
        margin = REFRESH_MARGIN_S if iat is None else min(REFRESH_MARGIN_S, (exp - iat) / 4)
        return self._clock() < exp - margin

    async def get(self) -> str:
        """The current token, fetching a new one first when it is missing or expiring."""
        async with self._lock:
            current = self._current
            if current is not None and (self._provider is None or self._fresh(current)):
                return current
            return await self._fetch()

    def invalidate(self, token: str) -> None:
        """The server refused `token`: the next `get` asks the provider again.

        Passing the refused token makes concurrent refusals (WebSocket and REST
        at once) cost one provider call, not two.
        """
        if self._provider is None:
            raise Unauthorized("the server refused the token (and it is a fixed token)")
        if self._current == token:
            self._current = None

    async def _fetch(self) -> str:
        provider = self._provider
        if provider is None:
            raise Unauthorized("no token provider to ask for a new token")
        result = provider()
        token = await result if inspect.isawaitable(result) else result
        if not isinstance(token, str) or not token:
            raise Unauthorized("the token provider returned no token")
        self.fetches += 1
        self._current = token
        return token
