"""User ids, room ids and direct-message rooms.

A direct-message room `dm:<a>:<b>` (a < b in byte order) exists implicitly for
any two users; its members follow from its name, so checking membership of a
DM room needs no database.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DM_PREFIX = "dm:"


def is_user_id(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def is_group_room_id(value: str) -> bool:
    return _NAME.fullmatch(value) is not None


def dm_room(a: str, b: str) -> str:
    """The direct-message room of two users, whatever their order."""
    low, high = sorted((a, b), key=lambda s: s.encode())
    return f"{DM_PREFIX}{low}:{high}"


def dm_members(room: str) -> tuple[str, str] | None:
    """The two members of a well-formed DM room id, or None if it is not one.

    `dm:a:a` and `dm:b:a` (wrong order) are not rooms: accepting them would give
    one conversation two ids.
    """
    if not room.startswith(DM_PREFIX):
        return None
    parts = room[len(DM_PREFIX) :].split(":")
    if len(parts) != 2:
        return None
    a, b = parts
    if not (is_user_id(a) and is_user_id(b)) or not a.encode() < b.encode():
        return None
    return a, b


def is_room_id(value: str) -> bool:
    return is_group_room_id(value) or dm_members(value) is not None
