"""Who is in which room, cached on the node so that a send costs no query.

Group rooms are read from the store once and then kept; a membership change
made on any node travels as a `member` event on the log and drops the entry
everywhere (within the log's latency, well under a second). A DM room's two
members follow from its id and need no store at all.

A "no" from the cache is re-checked against the store when the entry is more
than a second old, so a member added on another node is not refused while
its event is in flight; a "yes" is trusted until the event says otherwise.

A change drops the entry, so the next answer comes from the store; but the
set it held, with the change applied, is kept as the last known one. When
the store is down that set still answers "yes" for a member, so sends go on
through a database outage even right after a change (a user added to the
room, or the node reading back its own `added` events). A removed user is
never in it: events are applied in the order they are read, and a removal
made on this node keeps its user out until its own event is read back, past
any older `added` still on its way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
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
        # Bumped by every change: a load that raced with one is not cached.
        self._generation: dict[str, int] = {}
        # Rooms whose entry a change dropped: the members as of that change.
        self._last_known: dict[str, frozenset[str]] = {}
        self._loading: dict[tuple[str, int], asyncio.Future[frozenset[str] | None]] = {}
        self._removing: set[tuple[str, str]] = set()  # (room, user) removed here, not read back

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
            # arrives as a `member` event and takes the user out), so sends keep
            # flowing through an outage longer than MAX_AGE_S.
            if user in self._known(room) and (room, user) not in self._removing:
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
        # The members of a room who connect together (a connect storm, a
        # reconnect after a restart) ask at once: one query answers them all,
        # unless a change came in since it started.
        key = (room, generation)
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._store.members(room))
            loading.add_done_callback(lambda done: self._loaded(key, done))
        members = await asyncio.shield(loading)
        if self._generation.get(room, 0) == generation:
            self._rooms[room] = _Entry(members, time.monotonic())
            self._last_known.pop(room, None)
        return members

    def _loaded(self, key: tuple[str, int], done: asyncio.Future[frozenset[str] | None]) -> None:
        del self._loading[key]
        if not done.cancelled():
            done.exception()  # retrieved: its callers, if any are left, raise it

    def _known(self, room: str) -> frozenset[str]:
        entry = self._rooms.get(room)
        if entry is not None:
            return entry.members or frozenset()
        return self._last_known.get(room, frozenset())

    def generation(self, room: str) -> int:
        """Bumped by every change: an answer older than a change shows it."""
        return self._generation.get(room, 0)

    def changed(self, room: str, users: Iterable[str], added: bool) -> None:
        """Users added to or removed from a room: the store has the new set."""
        known = self._known(room)
        self._last_known[room] = known.union(users) if added else known.difference(users)
        self._rooms.pop(room, None)
        self._generation[room] = self._generation.get(room, 0) + 1

    def removed_here(self, room: str, user: str) -> None:
        """A removal this node committed, before its event is read back.

        Events are applied to the last known set in the order they are read,
        and an `added` older than this removal may still be on its way (this
        node's own, or another node's): until the removal itself is read back,
        the user stays out of the outage answer whatever is read meanwhile.
        """
        self._removing.add((room, user))
        self.changed(room, [user], added=False)

    def removal_read_back(self, room: str, user: str) -> None:
        """This node's removal, read from the log: now in the log's order."""
        self._removing.discard((room, user))
        known = self._last_known.get(room)
        if known is not None:
            self._last_known[room] = known - {user}
