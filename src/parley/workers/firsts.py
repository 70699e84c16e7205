"""The first record of each send, as every reader of the log decides it.

A send retried on two gateways at once can reach the log twice; gateways and
the store keep only the first record of its (room, sender, client_id). A
worker that reacts to messages must make the same choice, or it notifies or
counts a message nobody was shown. Entries older than the idempotency window
are forgotten (a retry after it is a new message everywhere).
"""

from __future__ import annotations

from parley.protocol.messages import ChatMessage

MAX_KEPT = 2_000_000


class FirstSends:
    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms
        self._seen: dict[tuple[str, str, str], int] = {}  # in log order: oldest first

    def first(self, msg: ChatMessage) -> bool:
        """True for the first record of its send; False for a repeat."""
        key = (msg.room, msg.sender, msg.client_id)
        if key in self._seen:
            return False
        self._seen[key] = msg.ts_ms
        self._forget(msg.ts_ms - self._window_ms)
        return True

    def _forget(self, before_ms: int) -> None:
        while self._seen:
            key, ts = next(iter(self._seen.items()))
            if ts >= before_ms and len(self._seen) <= MAX_KEPT:
                return
            del self._seen[key]
