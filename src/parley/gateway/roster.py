"""Who to tell when someone's presence changes: the local side of presence.

`Presence` (presence.py) decides who is online cluster-wide; the roster knows
which local users share a room with whom, and sends the `presence` frames.
One announcer task works through the changes in order, so a client never
sees an old status after a newer one. A local user's rooms are known; a
remote user's are cached, so a reconnect storm costs each node one query per
user rather than per event.

Presence travels only through rooms of at most `max_room` members (DMs
always): in a room of N members, N joins would cost N² frames, which is why
large chat systems do not broadcast presence in big rooms either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection

from parley.gateway.hub import Hub
from parley.gateway.membership import Membership
from parley.presence import Change
from parley.protocol.messages import encode
from parley.storage.base import Store, StoreUnavailable

logger = logging.getLogger(__name__)

ROOMS_CACHE_S = 30.0


class Roster:
    def __init__(self, store: Store, hub: Hub, membership: Membership, max_room: int) -> None:
        self._store = store
        self._hub = hub
        self._membership = membership
        self._max_room = max_room
        # Local users -> their rooms, as a tuple: a user is in a few rooms, and a
        # set costs 216 bytes per connected user even for one room (a tuple, 48).
        self._user_rooms: dict[str, tuple[str, ...]] = {}
        self._room_users: dict[str, set[str]] = {}  # room -> its local users
        self._rooms_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._changes: asyncio.Queue[Change] = asyncio.Queue()

    # Local users ------------------------------------------------------------------

    def add_user(self, user: str, rooms: list[str]) -> None:
        self._rooms_cache.pop(user, None)
        known = self._user_rooms.get(user, ())
        self._user_rooms[user] = (*known, *(r for r in dict.fromkeys(rooms) if r not in known))
        for room in rooms:
            self._room_users.setdefault(room, set()).add(user)

    def remove_user(self, user: str) -> None:
        rooms = self._user_rooms.pop(user, None)
        if rooms is None:
            return
        for room in rooms:
            self._drop(user, room)
        # Announcing the departure needs these rooms again: kept like a
        # remote user's, so a disconnect storm costs no query per user either.
        self._rooms_cache[user] = (time.monotonic(), frozenset(rooms))

    def joined(self, user: str, room: str) -> None:
        """A membership change: only users connected here are tracked."""
        self._rooms_cache.pop(user, None)
        rooms = self._user_rooms.get(user)
        if rooms is not None:
            if room not in rooms:
                self._user_rooms[user] = (*rooms, room)
            self._room_users.setdefault(room, set()).add(user)

    def left(self, user: str, room: str) -> None:
        self._rooms_cache.pop(user, None)
        rooms = self._user_rooms.get(user)
        if rooms is not None:
            self._user_rooms[user] = tuple(r for r in rooms if r != room)
            self._drop(user, room)

    def _drop(self, user: str, room: str) -> None:
        users = self._room_users.get(room)
        if users is not None:
            users.discard(user)
            if not users:
                del self._room_users[room]

    # Announcing -----------------------------------------------------------------

    def queue(self, changes: list[Change]) -> None:
        for change in changes:
            self._changes.put_nowait(change)

    async def run(self) -> None:
        while True:
            user, status = await self._changes.get()
            try:
                await self._announce(user, status)
            except Exception:
                logger.exception("presence of %s not announced", user)

    async def _rooms_of(self, user: str) -> Collection[str]:
        local = self._user_rooms.get(user)
        if local is not None:
            # A user connected here: their rooms are known and kept current
            # (joined, left), so announcing their arrival costs no query (a
            # join storm would make one per connection) and no cache entry.
            return local
        cached = self._rooms_cache.get(user)
        now = time.monotonic()
        if cached is not None and now - cached[0] < ROOMS_CACHE_S:
            return cached[1]
        rooms = frozenset(await self._store.room_ids_of(user))
        self._rooms_cache[user] = (now, rooms)
        return rooms

    async def carries_presence(self, room: str) -> bool:
        members = await self._membership.members(room)
        return members is not None and len(members) <= self._max_room

    async def mates(self, user: str, rooms: list[str]) -> set[str]:
        """Everyone who shares a presence-carrying room with the user."""
        out: set[str] = set()
        for room in rooms:
            members = await self._membership.members(room)
            if members is not None and len(members) <= self._max_room:
                out |= members
        out.discard(user)
        return out

    async def _announce(self, user: str, status: str) -> None:
        if not self._room_users:
            return
        try:
            rooms = await self._rooms_of(user)
        except StoreUnavailable:
            return
        recipients: set[str] = set()
        for room in rooms:
            here = self._room_users.get(room)
            if here and await self.carries_presence(room):
                recipients |= here
        recipients.discard(user)
        if not recipients:
            return
        frame = encode({"type": "presence", "user": user, "status": status})
        for local in recipients:
            for session in self._hub.sessions_of(local):
                session.writer.send_json(frame)
