"""The membership cache through a database outage: a member it knew keeps
sending even when a change dropped the room's entry just before the outage,
and a user removed since is never let through."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from parley.gateway.membership import Membership
from parley.storage.base import Store, StoreUnavailable


class Rooms:
    """The one store call membership makes, with a switch to take it down."""

    def __init__(self, rooms: dict[str, set[str]]) -> None:
        self.rooms = rooms
        self.down = False
        self.asked = 0

    async def members(self, room_id: str) -> frozenset[str] | None:
        self.asked += 1
        down, members = self.down, self.rooms.get(room_id)  # as the query found them
        answer = None if members is None else frozenset(members)
        await asyncio.sleep(0.01)  # its answer's way back, while others ask too
        if down:
            raise StoreUnavailable("the database is down")
        return answer


def membership(rooms: Rooms) -> Membership:
    return Membership(cast(Store, rooms))


async def test_a_known_member_is_answered_from_the_cache_without_the_store() -> None:
    rooms = Rooms({"club": {"alice", "bob"}})
    cache = membership(rooms)
    assert await cache.is_member("club", "alice")
    assert await cache.is_member("club", "bob")
    assert rooms.asked == 1


async def test_after_an_added_event_the_store_is_asked_again() -> None:
    rooms = Rooms({"club": {"alice"}})
    cache = membership(rooms)
    assert not await cache.is_member("club", "carol")
    rooms.rooms["club"].add("carol")
    cache.changed("club", ["carol"], added=True)
    assert await cache.is_member("club", "carol")
    assert rooms.asked == 2


async def test_members_known_before_a_change_still_send_while_the_store_is_down() -> None:
    rooms = Rooms({"club": {"alice", "bob"}})
    cache = membership(rooms)
    assert await cache.is_member("club", "alice")
    # The node reads back its own `added` event for bob (or carol is added on
    # another node), and then the database goes away.
    cache.changed("club", ["bob"], added=True)
    cache.changed("club", ["carol"], added=True)
    rooms.down = True
    assert await cache.is_member("club", "alice")
    assert await cache.is_member("club", "bob")
    assert await cache.is_member("club", "carol")


async def test_a_user_removed_before_the_outage_is_refused_during_it() -> None:
    rooms = Rooms({"club": {"alice", "bob"}})
    cache = membership(rooms)
    assert await cache.is_member("club", "bob")
    cache.changed("club", ["bob"], added=False)
    cache.changed("club", ["carol"], added=True)
    rooms.down = True
    assert await cache.is_member("club", "alice")
    with pytest.raises(StoreUnavailable):
        await cache.is_member("club", "bob")


async def test_a_room_never_read_cannot_be_answered_while_the_store_is_down() -> None:
    rooms = Rooms({"club": {"alice"}})
    cache = membership(rooms)
    rooms.down = True
    with pytest.raises(StoreUnavailable):
        await cache.is_member("club", "alice")


async def test_a_fresh_read_replaces_what_was_known() -> None:
    rooms = Rooms({"club": {"alice", "bob"}})
    cache = membership(rooms)
    assert await cache.is_member("club", "bob")
    cache.changed("club", ["carol"], added=True)
    # The store, read after the change, no longer has bob (his removal's event
    # is still on its way): what it says wins over the set kept for outages.
    rooms.rooms["club"] = {"alice", "carol"}
    assert await cache.is_member("club", "carol")
    rooms.down = True
    assert not await cache.is_member("club", "bob")


async def test_members_of_a_room_asking_together_cost_one_query() -> None:
    rooms = Rooms({"club": {f"u{i}" for i in range(20)}})
    cache = membership(rooms)
    answers = await asyncio.gather(*(cache.is_member("club", f"u{i}") for i in range(20)))
    assert all(answers)
    assert rooms.asked == 1


async def test_a_change_during_a_query_makes_the_next_caller_ask_again() -> None:
    rooms = Rooms({"club": {"alice"}})
    cache = membership(rooms)
    first = asyncio.create_task(cache.members("club"))
    await asyncio.sleep(0.005)  # the query has read the table, its answer is on its way
    rooms.rooms["club"].add("carol")
    cache.changed("club", ["carol"], added=True)
    second = asyncio.create_task(cache.members("club"))
    assert await first == frozenset({"alice"})  # started before the change
    assert await second == frozenset({"alice", "carol"})
    assert rooms.asked == 2


async def test_a_failed_query_fails_every_caller_waiting_on_it() -> None:
    rooms = Rooms({"club": {"alice"}})
    rooms.down = True
    cache = membership(rooms)
    results = await asyncio.gather(
        cache.members("club"), cache.members("club"), return_exceptions=True
    )
    assert [type(r) for r in results] == [StoreUnavailable, StoreUnavailable]
    assert rooms.asked == 1
    rooms.down = False
    assert await cache.members("club") == frozenset({"alice"})


async def test_an_older_added_read_after_a_removal_made_here_does_not_let_the_user_in() -> None:
    rooms = Rooms({"club": {"alice"}})
    cache = membership(rooms)
    assert await cache.is_member("club", "alice")
    # bob is added, then removed, on this node; the log still has to give
    # back the `added`, then the `removed`.
    rooms.rooms["club"].add("bob")
    cache.changed("club", ["bob"], added=True)
    rooms.rooms["club"].discard("bob")
    cache.removed_here("club", "bob")
    cache.changed("club", ["bob"], added=True)  # the `added`, read back
    rooms.down = True
    with pytest.raises(StoreUnavailable):
        await cache.is_member("club", "bob")
    cache.removal_read_back("club", "bob")
    with pytest.raises(StoreUnavailable):
        await cache.is_member("club", "bob")
    # Added again on another node, after the removal in the log: a member.
    cache.changed("club", ["bob"], added=True)
    assert await cache.is_member("club", "bob")
    assert await cache.is_member("club", "alice")
