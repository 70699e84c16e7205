"""One subscribed room's cursor: each message once, in seq order, across reconnects.

Pure bookkeeping, no I/O. The client feeds it what the server sends; it
answers what to hand to the application. `last_seq` is the last seq handed
over; a rejoin asks the server for everything after it (`since`), and any
message at or below it (a replay, a history that overlaps the live stream)
is dropped, so nothing is shown twice.

While a join is in flight (the `subscribe` is sent, its `history` not yet
complete) live messages are held back: they must come after the history,
including pages fetched with `history before=` when a resume had more
messages than the server replays at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from parley.client.events import Message, Subscription


class RoomCursor:
    __slots__ = ("_held", "joining", "last_seq", "ready", "room", "subscription")

    def __init__(self, room: str, since: int | None, ready: asyncio.Future[Subscription]) -> None:
        self.room = room
        self.last_seq = since
        self.joining = False
        self._held: list[Message] = []
        # Resolved by the first completed join; `subscribe()` callers await it.
        self.ready = ready
        self.subscription: Subscription | None = None

    def start_join(self) -> int | None:
        """A `subscribe` is about to be sent; returns its `since` (None: the recent page)."""
        self.joining = True
        self._held.clear()
        return self.last_seq

    def abort_join(self) -> None:
        """The connection dropped mid-join: what was held will be replayed after `since`."""
        self.joining = False
        self._held.clear()

    def offer(self, message: Message) -> list[Message]:
        """A live message: the messages to deliver now (none while joining, or a duplicate)."""
        if self.joining:
            self._held.append(message)
            return []
        return self._take((message,))

    def finish_join(self, history: Iterable[Message]) -> list[Message]:
        """The join's history (oldest first) is complete: deliver it, then what was held."""
        out = self._take(history)
        if self.last_seq is None:
            # An empty room: everything from the start is new next time.
            self.last_seq = -1
        out.extend(self._take(self._held))
        self._held.clear()
        self.joining = False
        return out

    def _take(self, messages: Iterable[Message]) -> list[Message]:
        out = []
        for m in sorted(messages, key=lambda m: m.seq):
            if self.last_seq is None or m.seq > self.last_seq:
                out.append(m)
                self.last_seq = m.seq
        return out
