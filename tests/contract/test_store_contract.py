"""The Store contract of `parley.storage.base`, run by every implementation.

SQLite on a file of its own and PostgreSQL on a fresh database per test. Member
lists are compared as sets: the contract does not order them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley.protocol.messages import ChatMessage, message_id
from parley.protocol.names import dm_room
from parley.storage.base import (
    CountsBatch,
    Room,
    RoomExists,
    RoomMinute,
    RoomSummary,
    Store,
    StoreError,
)
from parley.storage.postgres import PostgresStore
from parley.storage.sql import SqlStore, migrations
from parley.storage.sqlite import SqliteStore
from tests.conftest import pg_database

TS = 1_764_136_800_123  # 2025-11-26T06:00:00.123Z


@dataclass(slots=True, frozen=True)
class Target:
    kind: str
    new_store: Callable[[], Store]  # a new, not yet started store over the same database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", lambda: SqliteStore(tmp_path / "x.db"))
        return
    services: dict[str, str] = request.getfixturevalue("services")
    async with pg_database(services["db"]) as url:
        yield Target("postgres", lambda: PostgresStore(url))


@pytest.fixture
async def store(target: Target) -> AsyncIterator[Store]:
    s = target.new_store()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def msg(
    room: str,
    seq: int,
    sender: str = "alice",
    client_id: str | None = None,
    body: str | None = None,
    ts_ms: int = TS,
) -> ChatMessage:
    return ChatMessage(
        room=room,
        id=message_id(0, seq),
        seq=seq,
        sender=sender,
        body=body if body is not None else f"{room} #{seq}",
        ts_ms=ts_ms + seq,
        client_id=client_id if client_id is not None else f"c{seq}",
    )


def seqs(messages: Sequence[ChatMessage]) -> list[int]:
    return [m.seq for m in messages]


def shape(room: Room | None) -> tuple[str, str, str | None, str, frozenset[str]] | None:
    """A room with its members as a set (the contract does not order them)."""
    if room is None:
        return None
    return (room.id, room.name, room.owner, room.kind, frozenset(room.members))


def by_room(summaries: Sequence[RoomSummary]) -> dict[str, tuple[int, int, int]]:
    return {s.room.id: (s.head, s.last_read, s.unread) for s in summaries}


async def schema_versions(store: Store) -> list[int]:
    assert isinstance(store, SqlStore)
    rows = await store._fetch("SELECT version FROM parley_schema ORDER BY version")
    return [int(r[0]) for r in rows]


# Lifecycle ------------------------------------------------------------------


async def test_migrations_apply_once_and_restart_cleanly(target: Target) -> None:
    shipped = [v for v, _ in migrations()]
    assert shipped and shipped == sorted(set(shipped))
    first = target.new_store()
    await first.start()
    try:
        assert await schema_versions(first) == shipped
        await first.create_room("kept", "Kept", "alice", ["bob"])
        assert await first.save_messages([msg("kept", 0)]) == 1
    finally:
        await first.stop()

    second = target.new_store()
    await second.start()  # the migrations are applied already: nothing runs again
    try:
        assert await second.ping() is True
        assert await schema_versions(second) == shipped
        assert shape(await second.get_room("kept")) == (
            "kept",
            "Kept",
            "alice",
            "group",
            frozenset({"alice", "bob"}),
        )
        assert await second.history("kept", None, 10) == [msg("kept", 0)]
    finally:
        await second.stop()


async def test_two_stores_migrating_one_fresh_database_at_once(target: Target) -> None:
    one, two = target.new_store(), target.new_store()
    try:
        await asyncio.gather(one.start(), two.start())
        assert await schema_versions(one) == [v for v, _ in migrations()]
        await one.create_room("r", "R", "alice", [])
        assert await two.members("r") == frozenset({"alice"})
    finally:
        await asyncio.gather(one.stop(), two.stop())


async def test_ping_is_false_once_stopped(target: Target) -> None:
    s = target.new_store()
    await s.start()
    assert await s.ping() is True
    await s.stop()
    assert await s.ping() is False


# Rooms and members ---------------------------------------------------------------


async def test_create_room_makes_owner_and_members(store: Store) -> None:
    room = await store.create_room("general", "General", "alice", ["bob", "carol", "alice"])
    expected = ("general", "General", "alice", "group", frozenset({"alice", "bob", "carol"}))
    assert shape(room) == expected
    assert len(room.members) == 3  # the owner listed again is one member
    assert shape(await store.get_room("general")) == expected
    assert await store.members("general") == frozenset({"alice", "bob", "carol"})
    for user in ("alice", "bob", "carol"):
        assert [r.id for r in await store.rooms_of(user)] == ["general"]


async def test_create_room_twice_raises_room_exists_and_changes_nothing(store: Store) -> None:
    await store.create_room("general", "General", "alice", ["bob"])
    with pytest.raises(RoomExists):
        await store.create_room("general", "Taken", "mallory", ["dave"])
    assert shape(await store.get_room("general")) == (
        "general",
        "General",
        "alice",
        "group",
        frozenset({"alice", "bob"}),
    )
    assert await store.rooms_of("mallory") == []
    assert await store.rooms_of("dave") == []
    assert RoomExists.retriable is False


async def test_unknown_rooms_and_users(store: Store) -> None:
    assert await store.get_room("nowhere") is None
    assert await store.members("nowhere") is None
    assert await store.rooms_of("nobody") == []
    assert await store.summaries("nobody") == []
    assert await store.remove_member("nowhere", "alice") is False
    assert await store.head("nowhere") == -1
    assert await store.history("nowhere", None, 10) == []


async def test_rooms_of_lists_every_room_of_the_user_only(store: Store) -> None:
    await store.create_room("a", "A", "alice", ["bob"])
    await store.create_room("b", "B", "bob", [])
    await store.create_room("c", "C", "carol", ["alice"])
    assert {r.id for r in await store.rooms_of("alice")} == {"a", "c"}
    assert {r.id for r in await store.rooms_of("bob")} == {"a", "b"}
    # Each room is listed whole, with all its members, not only the user.
    (c,) = [r for r in await store.rooms_of("alice") if r.id == "c"]
    assert set(c.members) == {"alice", "carol"}


async def test_room_ids_of_users_answers_each_user_like_room_ids_of(store: Store) -> None:
    await store.create_room("b", "B", "alice", ["bob"])
    await store.create_room("a", "A", "bob", ["alice", "o'neil"])
    await store.create_room("c", "C", "carol", [])
    users = ["alice", "bob", "carol", "o'neil", "nobody", "a%"]
    got = await store.room_ids_of_users(users)
    assert got == {
        "alice": ["a", "b"],
        "bob": ["a", "b"],
        "carol": ["c"],
        "o'neil": ["a"],
        "nobody": [],
        "a%": [],
    }
    for user in users:
        assert got[user] == await store.room_ids_of(user)
    assert await store.room_ids_of_users([]) == {}


async def test_add_and_remove_member_say_whether_they_changed_anything(store: Store) -> None:
    await store.create_room("r", "R", "alice", [])
    assert await store.add_member("r", "bob") is True
    assert await store.add_member("r", "bob") is False
    assert await store.members("r") == frozenset({"alice", "bob"})
    assert [r.id for r in await store.rooms_of("bob")] == ["r"]
    assert await store.remove_member("r", "bob") is True
    assert await store.remove_member("r", "bob") is False
    assert await store.remove_member("r", "nobody") is False
    assert await store.members("r") == frozenset({"alice"})
    assert await store.rooms_of("bob") == []
    assert await store.add_member("r", "bob") is True  # back again


async def test_a_room_whose_members_all_left_still_exists(store: Store) -> None:
    """members() says so (an empty set, not None); get_room must agree."""
    await store.create_room("r", "R", "alice", [])
    assert await store.remove_member("r", "alice") is True
    assert await store.members("r") == frozenset()
    with pytest.raises(RoomExists):
        await store.create_room("r", "Again", "bob", [])
    assert shape(await store.get_room("r")) == ("r", "R", "alice", "group", frozenset())


async def test_add_member_to_a_missing_room_raises_a_store_error(store: Store) -> None:
    """Both stores refuse it the same way, with an error of the Store's tree."""
    with pytest.raises(StoreError):
        await store.add_member("nowhere", "alice")
    assert await store.members("nowhere") is None


# Saving messages --------------------------------------------------------------------


async def test_save_messages_keeps_every_field(store: Store) -> None:
    m = ChatMessage(
        room="r",
        id="3-7",
        seq=2**40,
        sender="bob.b_9-x",
        body="héllo 👋 \"quoted\" 'single' \\ ;--",
        ts_ms=4_102_444_800_000,
        client_id="x" * 64,
    )
    assert await store.save_messages([m]) == 1
    (back,) = await store.history("r", None, 10)
    assert back == m
    assert (back.id, back.seq, back.ts_ms, back.body) == (m.id, m.seq, m.ts_ms, m.body)


async def test_save_messages_is_idempotent(store: Store) -> None:
    batch = [msg("r", s) for s in (0, 3, 4, 9)] + [msg("other", 1)]
    assert await store.save_messages(batch) == 5
    assert await store.save_messages(batch) == 0
    assert await store.save_messages(batch[1:3]) == 0
    assert await store.save_messages([]) == 0
    assert seqs(await store.history("r", None, 100)) == [0, 3, 4, 9]
    assert seqs(await store.history("other", None, 100)) == [1]


async def test_a_retried_send_in_a_later_batch_is_dropped(store: Store) -> None:
    first = msg("r", 5, client_id="same", body="first")
    assert await store.save_messages([first]) == 1
    retry = msg("r", 8, client_id="same", body="retry")
    assert await store.save_messages([retry, msg("r", 9)]) == 1
    assert await store.history("r", None, 100) == [first, msg("r", 9)]
    assert await store.head("r") == 9


async def test_a_retried_send_in_the_same_batch_keeps_the_lower_seq(store: Store) -> None:
    later = msg("r", 8, client_id="same", body="retry")
    first = msg("r", 5, client_id="same", body="first")
    assert await store.save_messages([later, first]) == 1  # given in reverse order
    assert await store.history("r", None, 100) == [first]


async def test_idempotency_is_per_room_and_per_sender(store: Store) -> None:
    batch = [
        msg("r", 1, sender="alice", client_id="k"),
        msg("r", 2, sender="bob", client_id="k"),
        msg("s", 1, sender="alice", client_id="k"),
    ]
    assert await store.save_messages(batch) == 3
    assert seqs(await store.history("r", None, 10)) == [1, 2]
    assert seqs(await store.history("s", None, 10)) == [1]


# Reading pages ---------------------------------------------------------------------------


@pytest.fixture
async def gappy(store: Store) -> Store:
    """Room "r" with seqs that have gaps (other rooms share the partition)."""
    await store.save_messages([msg("r", s) for s in (0, 2, 5, 7, 9, 12)] + [msg("x", 6)])
    return store


async def test_history_is_the_newest_limit_before_oldest_first(gappy: Store) -> None:
    assert seqs(await gappy.history("r", None, 3)) == [7, 9, 12]
    assert seqs(await gappy.history("r", None, 100)) == [0, 2, 5, 7, 9, 12]
    assert seqs(await gappy.history("r", 9, 2)) == [5, 7]
    assert seqs(await gappy.history("r", 8, 2)) == [5, 7]
    assert seqs(await gappy.history("r", 12, 100)) == [0, 2, 5, 7, 9]
    assert seqs(await gappy.history("r", 1, 10)) == [0]
    assert await gappy.history("r", 0, 10) == []
    assert seqs(await gappy.history("r", None, 1)) == [12]


async def test_range_is_the_newest_limit_between_bounds(gappy: Store) -> None:
    assert seqs(await gappy.range("r", 2, 12, 10)) == [5, 7, 9]
    assert seqs(await gappy.range("r", 2, 12, 2)) == [7, 9]
    assert seqs(await gappy.range("r", 2, None, 10)) == [5, 7, 9, 12]
    assert seqs(await gappy.range("r", -1, None, 100)) == [0, 2, 5, 7, 9, 12]
    assert seqs(await gappy.range("r", 5, 7, 10)) == []
    assert await gappy.range("r", 12, None, 10) == []


async def test_head_is_the_highest_stored_seq(gappy: Store) -> None:
    assert await gappy.head("r") == 12
    assert await gappy.head("x") == 6
    assert await gappy.head("empty") == -1


# Direct-message rooms ------------------------------------------------------------------------


async def test_a_dm_room_exists_with_both_members_once_a_message_is_saved(store: Store) -> None:
    room = dm_room("bob", "alice")
    assert await store.get_room(room) is None
    assert await store.save_messages([msg(room, 4, sender="bob")]) == 1
    expected = (room, room, None, "dm", frozenset({"alice", "bob"}))
    assert shape(await store.get_room(room)) == expected
    assert await store.members(room) == frozenset({"alice", "bob"})
    assert [r.id for r in await store.rooms_of("alice")] == [room]
    assert [r.id for r in await store.rooms_of("bob")] == [room]
    # A second message changes nothing about the room.
    assert await store.save_messages([msg(room, 7, sender="alice")]) == 1
    assert shape(await store.get_room(room)) == expected


async def test_only_well_formed_dm_rooms_are_made(store: Store) -> None:
    await store.save_messages([msg("dm:bob:alice", 1), msg("dm:alice:alice", 2)])
    assert await store.get_room("dm:bob:alice") is None
    assert await store.get_room("dm:alice:alice") is None
    assert await store.rooms_of("alice") == []


# Read marks and summaries ---------------------------------------------------------------------


async def test_a_dm_read_before_its_first_row_is_kept(store: Store) -> None:
    """The reader saw the message live; the persistence worker stores it later."""
    room = dm_room("alice", "bob")
    await store.set_last_read(room, "bob", 4)
    await store.save_messages([msg(room, 4, sender="alice"), msg(room, 6, sender="alice")])
    assert by_room(await store.summaries("bob"))[room][1] == 4
    [summary] = [s for s in await store.summaries("bob") if s.room.id == room]
    assert (summary.head, summary.unread) == (6, 1)


async def test_set_last_read_only_moves_forward(store: Store) -> None:
    await store.create_room("r", "R", "alice", ["bob"])
    await store.save_messages([msg("r", s, sender="alice") for s in range(10)])
    assert by_room(await store.summaries("bob"))["r"][1] == -1
    await store.set_last_read("r", "bob", 5)
    assert by_room(await store.summaries("bob"))["r"][1] == 5
    await store.set_last_read("r", "bob", 3)
    assert by_room(await store.summaries("bob"))["r"][1] == 5
    await store.set_last_read("r", "bob", 7)
    assert by_room(await store.summaries("bob"))["r"][1] == 7
    await store.set_last_read("r", "nobody", 9)  # not a member: nothing to move
    assert await store.summaries("nobody") == []
    assert by_room(await store.summaries("alice"))["r"][1] == -1


async def test_summaries_count_only_others_messages_after_last_read(store: Store) -> None:
    await store.create_room("r", "R", "alice", ["bob"])
    await store.create_room("quiet", "Quiet", "bob", [])
    senders = {0: "alice", 1: "alice", 2: "bob", 3: "bob", 4: "bob", 5: "alice"}
    await store.save_messages([msg("r", s, sender=u) for s, u in senders.items()])
    dm = dm_room("alice", "bob")
    await store.save_messages([msg(dm, 20, sender="alice"), msg(dm, 21, sender="alice")])

    assert by_room(await store.summaries("bob")) == {
        "r": (5, -1, 3),  # alice's 0, 1 and 5
        "quiet": (-1, -1, 0),
        dm: (21, -1, 2),
    }
    assert by_room(await store.summaries("alice")) == {"r": (5, -1, 3), dm: (21, -1, 0)}

    await store.set_last_read("r", "bob", 1)
    await store.set_last_read(dm, "bob", 20)
    await store.set_last_read("r", "alice", 4)
    assert by_room(await store.summaries("bob")) == {
        "r": (5, 1, 1),
        "quiet": (-1, -1, 0),
        dm: (21, 20, 1),
    }
    assert by_room(await store.summaries("alice"))["r"] == (5, 4, 0)
    summary = next(s for s in await store.summaries("bob") if s.room.id == "r")
    assert set(summary.room.members) == {"alice", "bob"}


async def test_persist_progress_is_saved_with_the_batch_and_never_moves_back(
    store: Store,
) -> None:
    assert await store.persisted("t.messages") == {}
    await store.save_messages([msg("r", 4)], ("t.messages", {0: 5, 1: 9}))
    assert await store.persisted("t.messages") == {0: 5, 1: 9}
    await store.save_messages([msg("r", 2)], ("t.messages", {0: 3}))  # a re-read batch
    assert await store.persisted("t.messages") == {0: 5, 1: 9}
    await store.save_messages([], ("t.messages", {1: 12}))  # a batch of skipped records
    assert await store.persisted("t.messages") == {0: 5, 1: 12}
    assert await store.persisted("other.messages") == {}
    assert seqs(await store.history("r", None, 10)) == [2, 4]


# Counters (the analytics worker) ---------------------------------------------------


async def test_add_counts_applies_a_batch_once_per_progress(store: Store) -> None:
    minute = TS - TS % 60_000
    first = CountsBatch(
        "src", 0, None, 10, [RoomMinute("r", minute, messages=4)], [("r", minute, "alice")]
    )
    assert await store.add_counts(first)
    assert not await store.add_counts(first)  # the same batch again: refused
    second = CountsBatch(
        "src",
        0,
        10,
        15,
        [RoomMinute("r", minute, messages=2, latency_count=3, latency_sum_ms=30)],
        [("r", minute, "alice"), ("r", minute, "bob")],
    )
    assert await store.add_counts(second)
    assert not await store.add_counts(second)
    stale = CountsBatch("src", 0, 10, 20, [RoomMinute("r", minute, messages=100)])
    assert not await store.add_counts(stale)  # progress is 15 now, not 10
    assert await store.persisted("src") == {0: 15}
    assert await store.room_stats("r", minute) == [RoomMinute("r", minute, 6, 3, 30, 2)]
    assert await store.active_users("r", minute) == 2
    assert await store.room_stats("r", minute + 60_000) == []


async def test_counts_of_sources_and_partitions_are_kept_apart(store: Store) -> None:
    m0 = TS - TS % 60_000
    m1 = m0 + 60_000
    assert await store.add_counts(CountsBatch("a", 0, None, 5, [RoomMinute("r", m0, 1)]))
    assert await store.add_counts(CountsBatch("a", 1, None, 7, [RoomMinute("r", m1, 2)]))
    assert await store.add_counts(
        CountsBatch("b", 0, None, 3, [RoomMinute("r", m1, latency_count=1, latency_sum_ms=9)])
    )
    assert await store.persisted("a") == {0: 5, 1: 7}
    assert await store.persisted("b") == {0: 3}
    assert await store.room_stats("r", m0) == [
        RoomMinute("r", m0, 1, 0, 0, 0),
        RoomMinute("r", m1, 2, 1, 9, 0),
    ]


async def test_a_send_counted_once_whatever_batch_repeats_it(store: Store) -> None:
    minute = TS - TS % 60_000
    first = [("r", "alice", "c1", minute), ("r", "bob", "c1", minute), ("r", "alice", "c2", minute)]
    assert await store.add_counts(CountsBatch("src", 0, None, 3, sends=first))
    # The same send again (a retry that reached the log twice), and one new one.
    again = [("r", "alice", "c1", minute), ("r", "carol", "c9", minute + 60_000)]
    assert await store.add_counts(CountsBatch("src", 0, 3, 5, sends=again))
    assert await store.room_stats("r", minute) == [
        RoomMinute("r", minute, 3, 0, 0, 2),
        RoomMinute("r", minute + 60_000, 1, 0, 0, 1),
    ]
    assert await store.forget_sends(minute + 60_000) == 3
    assert await store.forget_sends(minute + 60_000) == 0
