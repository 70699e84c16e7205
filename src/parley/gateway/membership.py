"""Who is in which room, cached on the node so that a send costs no query.

Group rooms are read from the store once and then kept; a membership change
made on any node travels as a `member` event on the log and drops the entry
everywhere (within the log's latency, well under a second). A DM room's two
members follow from its id and need no store at all.

A "no" from the cache is re-checked against the store when the entry is more
than a second old, so a member added on another node is not refused while
its event is in flight; a "yes" is trusted until the event says otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from parley.protocol.names import dm_members, is_group_room_id
from parley.storage.base import Store, StoreUnavailable

RECHECK_NO_AFTER_S = 1.0
# A "yes" is re-read after this long even without an event, so a lost event
# cannot keep a removed member in a room for more than this.
MAX_AGE_S = 60.0


@dataclass(slots=True)
class _Entry:
    members: frozenset[str] | None  # None: the room does not exist
    loaded_at: float


class Membership:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._rooms: dict[str, _Entry] = {}
        # Bumped by every invalidation: a load that raced with one is not cached.
        self._generation: dict[str, int] = {}

    def cached(self, room: str, user: str) -> bool | None:
        """The answer without a query, or None when only the store can tell."""
        pair = dm_members(room)
        if pair is not None:
            return user in pair
        if not is_group_room_id(room):
            return False
        entry = self._rooms.get(room)
        if entry is None:
            return None
        age = time.monotonic() - entry.loaded_at
        if entry.members is not None and user in entry.members:
            return True if age < MAX_AGE_S else None
        if age < RECHECK_NO_AFTER_S:
            return False
        return None

    async def is_member(self, room: str, user: str) -> bool:
        answer = self.cached(room, user)
        if answer is not None:
            return answer
        try:
            members = await self.load(room)
        except StoreUnavailable:
            # The database is down: a member we knew stays one (a removal still
            # arrives as a `member` event and drops the entry), so sends keep
            # flowing through an outage longer than MAX_AGE_S.
            entry = self._rooms.get(room)
            if entry is not None and entry.members is not None and user in entry.members:
                return True
            raise
        return members is not None and user in members

    async def members(self, room: str) -> frozenset[str] | None:
        """The members, from the cache while fresh (MAX_AGE_S), else from the store."""
        pair = dm_members(room)
        if pair is not None:
            return frozenset(pair)
        entry = self._rooms.get(room)
        if entry is not None and time.monotonic() - entry.loaded_at < MAX_AGE_S:
            return entry.members
        return await self.load(room)

    async def load(self, room: str) -> frozenset[str] | None:
        pair = dm_members(room)
        if pair is not None:
            return frozenset(pair)
        generation = self._generation.get(room, 0)
        members = await self._store.members(room)
        if self._generation.get(room, 0) == generation:
            self._rooms[room] = _Entry(members, time.monotonic())
        return members

    def generation(self, room: str) -> int:
        """Bumped by every invalidation: an answer older than a change shows it."""
        return self._generation.get(room, 0)

    def invalidate(self, room: str) -> None:
        self._rooms.pop(room, None)
        self._generation[room] = self._generation.get(room, 0) + 1
