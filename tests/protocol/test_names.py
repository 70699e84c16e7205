"""User ids, room ids and direct-message rooms (PROTOCOL.md, "Names")."""

from __future__ import annotations

import pytest

from parley.protocol.names import (
    dm_members,
    dm_room,
    is_group_room_id,
    is_room_id,
    is_user_id,
)


@pytest.mark.parametrize(
    "name", ["a", "alice", "Bob_2", "x.y-z", "_", "-", ".", "0", "A" * 64, "a.b_c-D9"]
)
def test_valid_user_and_group_room_ids(name: str) -> None:
    assert is_user_id(name)
    assert is_group_room_id(name)
    assert is_room_id(name)


@pytest.mark.parametrize(
    "name",
    ["", "A" * 65, "a b", "a:b", "a/b", "é", "\uff41", "alice\n", "\nalice", "a\x00", "a@b", "dm:"],
)
def test_invalid_user_and_group_room_ids(name: str) -> None:
    assert not is_user_id(name)
    assert not is_group_room_id(name)


def test_dm_room_orders_the_two_users_by_bytes() -> None:
    assert dm_room("bob", "alice") == "dm:alice:bob"
    assert dm_room("alice", "bob") == "dm:alice:bob"
    # Byte order, not alphabetical: every capital sorts before every small letter.
    assert dm_room("alice", "Bob") == "dm:Bob:alice"
    assert dm_room("a", "_") == "dm:_:a"  # "_" is 0x5F, "a" is 0x61
    assert dm_room("a-1", "a.1") == "dm:a-1:a.1"  # "-" 0x2D before "." 0x2E
    assert dm_room("ab", "a") == "dm:a:ab"  # a prefix sorts first


@pytest.mark.parametrize(
    ("a", "b"), [("alice", "bob"), ("Zed", "amy"), ("x_1", "x.1"), ("a" * 64, "b"), ("9", "A")]
)
def test_dm_members_inverts_dm_room(a: str, b: str) -> None:
    room = dm_room(a, b)
    assert room == dm_room(b, a)
    members = dm_members(room)
    assert members is not None and set(members) == {a, b}
    assert members[0].encode() < members[1].encode()
    assert is_room_id(room)
    assert not is_group_room_id(room)


@pytest.mark.parametrize(
    "room",
    [
        "dm:b:a",  # wrong order: one conversation would get two ids
        "dm:Bob:Alice",
        "dm:alice:Bob",  # "B" < "a" in bytes
        "dm:a:a",  # with oneself
        "dm:a",
        "dm:",
        "dm::b",
        "dm:a:",
        "dm:a:b:c",
        "dm:a b:c",
        "dm:a:é",
        "dm:a:" + "b" * 65,
        "DM:a:b",
        "dm;a:b",
        "general",
        "xdm:a:b",
        " dm:a:b",
        "dm:a:b\n",
    ],
)
def test_dm_members_rejects_malformed_rooms(room: str) -> None:
    assert dm_members(room) is None
    assert not is_room_id(room) or is_group_room_id(room)


def test_room_ids() -> None:
    assert is_room_id("general")
    assert is_room_id("dm:alice:bob")
    assert not is_room_id("dm:bob:alice")
    assert not is_room_id("dm:alice:alice")
    assert not is_room_id("")
    assert not is_room_id("a" * 65)
