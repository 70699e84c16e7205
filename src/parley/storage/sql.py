"""The queries both SQL stores share, written once with `?` placeholders.

SqliteStore and PostgresStore only say how to run a statement; every query,
and so every rule of the Store contract, lives here.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from parley.protocol.messages import ChatMessage
from parley.protocol.names import dm_members
from parley.storage.base import (
    CountsBatch,
    Room,
    RoomExists,
    RoomMinute,
    RoomSummary,
    Store,
    StoreUnavailable,
)

Row = tuple[Any, ...]
Statement = tuple[str, Sequence[Sequence[Any]]]  # a query and the argument rows to run it with

_MSG_COLUMNS = "room_id, id, seq, sender, body, ts_ms, client_id"


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of every migration shipped with the package, in order."""
    folder = resources.files("parley.storage") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _message(row: Row) -> ChatMessage:
    return ChatMessage(
        room=row[0],
        id=row[1],
        seq=int(row[2]),
        sender=row[3],
        body=row[4],
        ts_ms=int(row[5]),
        client_id=row[6],
    )


class SqlStore(Store):
    """Store logic over three primitives that each dialect implements."""

    @abc.abstractmethod
    async def _fetch(self, query: str, *args: Any) -> list[Row]: ...

    @abc.abstractmethod
    async def _transaction(
        self, statements: Sequence[Statement], *, all_or_nothing: bool = False
    ) -> list[int]:
        """Run the statements in one transaction; rows changed by each.

        With `all_or_nothing`, a first statement that changes no row rolls the
        transaction back and the rest do not run (create-if-absent).
        """

    @abc.abstractmethod
    def _one_of(self, values: Sequence[str]) -> tuple[str, Any]:
        """`column <condition>` true for any of the values, and its one argument.

        One argument, not one placeholder a value: the statement's text stays
        the same whatever the number, so it is prepared once.
        """

    async def ping(self) -> bool:
        try:
            await self._fetch("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    async def create_room(
        self, room_id: str, name: str, owner: str, members: Sequence[str]
    ) -> Room:
        everyone = tuple(dict.fromkeys([owner, *members]))
        now = int(time.time() * 1000)
        changed = await self._transaction(
            [
                (
                    "INSERT INTO rooms (id, name, owner, kind, created_ms)"
                    " VALUES (?, ?, ?, 'group', ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room_id, name, owner, now)],
                ),
                (
                    "INSERT INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room_id, u, now) for u in everyone],
                ),
            ],
            all_or_nothing=True,
        )
        if changed[0] == 0:
            raise RoomExists(room_id)
        return Room(room_id, name, owner, "group", everyone)

    async def _rooms(self, where: str, *args: Any) -> list[Room]:
        rows = await self._fetch(
            "SELECT r.id, r.name, r.owner, r.kind, m.user_id FROM rooms r"
            f" LEFT JOIN members m ON m.room_id = r.id WHERE {where} ORDER BY r.id, m.user_id",
            *args,
        )
        rooms: dict[str, tuple[Row, list[str]]] = {}
        for row in rows:
            members = rooms.setdefault(row[0], (row, []))[1]
            if row[4] is not None:
                members.append(row[4])
        return [Room(r[0], r[1], r[2], r[3], tuple(m)) for r, m in rooms.values()]

    async def get_room(self, room_id: str) -> Room | None:
        found = await self._rooms("r.id = ?", room_id)
        return found[0] if found else None

    async def members(self, room_id: str) -> frozenset[str] | None:
        rows = await self._fetch(
            "SELECT m.user_id FROM rooms r LEFT JOIN members m ON m.room_id = r.id WHERE r.id = ?",
            room_id,
        )
        if not rows:
            return None
        return frozenset(r[0] for r in rows if r[0] is not None)

    async def rooms_of(self, user: str) -> list[Room]:
        return await self._rooms("r.id IN (SELECT room_id FROM members WHERE user_id = ?)", user)

    async def room_ids_of(self, user: str) -> list[str]:
        rows = await self._fetch(
            "SELECT room_id FROM members WHERE user_id = ? ORDER BY room_id", user
        )
        return [r[0] for r in rows]

    async def room_ids_of_users(self, users: Sequence[str]) -> dict[str, list[str]]:
        condition, values = self._one_of(users)
        rows = await self._fetch(
            f"SELECT user_id, room_id FROM members WHERE user_id {condition}"
            " ORDER BY user_id, room_id",
            values,
        )
        out: dict[str, list[str]] = {user: [] for user in users}
        for user, room in rows:
            out[user].append(room)
        return out

    async def add_member(self, room_id: str, user: str) -> bool:
        changed = await self._transaction(
            [
                (
                    "INSERT INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room_id, user, int(time.time() * 1000))],
                )
            ]
        )
        return changed[0] > 0

    async def remove_member(self, room_id: str, user: str) -> bool:
        changed = await self._transaction(
            [("DELETE FROM members WHERE room_id = ? AND user_id = ?", [(room_id, user)])]
        )
        return changed[0] > 0

    def _save_statements(
        self,
        messages: Sequence[ChatMessage],
        progress: tuple[str, Mapping[int, int]] | None = None,
    ) -> list[Statement]:
        ordered = sorted(messages, key=lambda m: (m.room, m.seq))
        statements: list[Statement] = [
            (
                f"INSERT INTO messages ({_MSG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(m.room, m.id, m.seq, m.sender, m.body, m.ts_ms, m.client_id) for m in ordered],
            )
        ]
        dms = {m.room: dm_members(m.room) for m in ordered if m.room.startswith("dm:")}
        pairs = {room: pair for room, pair in dms.items() if pair is not None}
        if pairs:
            now = int(time.time() * 1000)
            statements.append(
                (
                    "INSERT INTO rooms (id, name, owner, kind, created_ms)"
                    " VALUES (?, ?, NULL, 'dm', ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room, room, now) for room in pairs],
                )
            )
            statements.append(
                (
                    "INSERT INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room, u, now) for room, pair in pairs.items() for u in pair],
                )
            )
        if progress is not None:
            topic, offsets = progress
            statements.append(
                (
                    "INSERT INTO persist_progress (topic, partition_id, next_offset)"
                    " VALUES (?, ?, ?) ON CONFLICT (topic, partition_id) DO UPDATE SET"
                    " next_offset = CASE WHEN excluded.next_offset > persist_progress.next_offset"
                    " THEN excluded.next_offset ELSE persist_progress.next_offset END",
                    [(topic, p, o) for p, o in sorted(offsets.items())],
                )
            )
        return statements

    async def save_messages(
        self,
        messages: Sequence[ChatMessage],
        progress: tuple[str, Mapping[int, int]] | None = None,
    ) -> int:
        if not messages and progress is None:
            return 0
        changed = await self._transaction(self._save_statements(messages, progress))
        return changed[0]

    async def persisted(self, topic: str) -> dict[int, int]:
        rows = await self._fetch(
            "SELECT partition_id, next_offset FROM persist_progress WHERE topic = ?", topic
        )
        return {int(p): int(o) for p, o in rows}

    async def add_counts(self, batch: CountsBatch) -> bool:
        if batch.expected is None:
            guard: Statement = (
                "INSERT INTO persist_progress (topic, partition_id, next_offset)"
                " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                [(batch.source, batch.partition, batch.next_offset)],
            )
        else:
            guard = (
                "UPDATE persist_progress SET next_offset = ?"
                " WHERE topic = ? AND partition_id = ? AND next_offset = ?",
                [(batch.next_offset, batch.source, batch.partition, batch.expected)],
            )
        statements = [guard]
        if batch.minutes:
            statements.append(
                (
                    "INSERT INTO room_minutes (room_id, minute_ms, messages, lat_count, lat_sum_ms)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, minute_ms) DO UPDATE SET"
                    " messages = room_minutes.messages + excluded.messages,"
                    " lat_count = room_minutes.lat_count + excluded.lat_count,"
                    " lat_sum_ms = room_minutes.lat_sum_ms + excluded.lat_sum_ms",
                    [
                        (m.room, m.minute_ms, m.messages, m.latency_count, m.latency_sum_ms)
                        for m in sorted(batch.minutes, key=lambda m: (m.room, m.minute_ms))
                    ],
                )
            )
        if batch.active:
            statements.append(
                (
                    "INSERT INTO room_active (room_id, minute_ms, user_id) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    sorted(set(batch.active)),
                )
            )
        if batch.sends:
            tag = f"{batch.source}/{batch.partition}/{batch.next_offset}"
            statements += [
                (
                    "INSERT INTO counted_sends (room_id, sender, client_id, minute_ms, batch)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [(r, s, c, m, tag) for r, s, c, m in batch.sends],
                ),
                (
                    "INSERT INTO room_minutes (room_id, minute_ms, messages)"
                    " SELECT room_id, minute_ms, COUNT(*) FROM counted_sends WHERE batch = ?"
                    " GROUP BY room_id, minute_ms ON CONFLICT (room_id, minute_ms) DO UPDATE SET"
                    " messages = room_minutes.messages + excluded.messages",
                    [(tag,)],
                ),
                (
                    "INSERT INTO room_active (room_id, minute_ms, user_id)"
                    " SELECT DISTINCT room_id, minute_ms, sender FROM counted_sends"
                    " WHERE batch = ? ON CONFLICT DO NOTHING",
                    [(tag,)],
                ),
            ]
        changed = await self._transaction(statements, all_or_nothing=True)
        return changed[0] > 0

    async def forget_sends(self, before_ms: int) -> int:
        changed = await self._transaction(
            [("DELETE FROM counted_sends WHERE minute_ms < ?", [(before_ms,)])]
        )
        return changed[0]

    async def room_stats(self, room_id: str, since_ms: int) -> list[RoomMinute]:
        rows = await self._fetch(
            "SELECT m.minute_ms, m.messages, m.lat_count, m.lat_sum_ms,"
            " (SELECT COUNT(*) FROM room_active a"
            "   WHERE a.room_id = m.room_id AND a.minute_ms = m.minute_ms)"
            " FROM room_minutes m WHERE m.room_id = ? AND m.minute_ms >= ? ORDER BY m.minute_ms",
            room_id,
            since_ms,
        )
        return [
            RoomMinute(room_id, int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows
        ]

    async def active_users(self, room_id: str, since_ms: int) -> int:
        rows = await self._fetch(
            "SELECT COUNT(DISTINCT user_id) FROM room_active WHERE room_id = ? AND minute_ms >= ?",
            room_id,
            since_ms,
        )
        return int(rows[0][0]) if rows else 0

    async def history(self, room_id: str, before: int | None, limit: int) -> list[ChatMessage]:
        return await self.range(room_id, -1, before, limit)

    async def range(
        self, room_id: str, after: int, before: int | None, limit: int
    ) -> list[ChatMessage]:
        bound = before if before is not None else 2**62
        rows = await self._fetch(
            f"SELECT {_MSG_COLUMNS} FROM messages WHERE room_id = ? AND seq > ? AND seq < ?"
            " ORDER BY seq DESC LIMIT ?",
            room_id,
            after,
            bound,
            limit,
        )
        return [_message(r) for r in reversed(rows)]

    async def head(self, room_id: str) -> int:
        rows = await self._fetch("SELECT MAX(seq) FROM messages WHERE room_id = ?", room_id)
        return int(rows[0][0]) if rows and rows[0][0] is not None else -1

    async def set_last_read(self, room_id: str, user: str, seq: int) -> None:
        statements: list[Statement] = []
        pair = dm_members(room_id)
        if pair is not None:
            # A DM's rows appear when its first message is stored; a read may
            # come first (the worker lags): make them now, or the read is lost.
            now = int(time.time() * 1000)
            statements += [
                (
                    "INSERT INTO rooms (id, name, owner, kind, created_ms)"
                    " VALUES (?, ?, NULL, 'dm', ?) ON CONFLICT DO NOTHING",
                    [(room_id, room_id, now)],
                ),
                (
                    "INSERT INTO members (room_id, user_id, joined_ms) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    [(room_id, u, now) for u in pair],
                ),
            ]
        statements.append(
            (
                "UPDATE members SET last_read = ? WHERE room_id = ? AND user_id = ?"
                " AND last_read < ?",
                [(seq, room_id, user, seq)],
            )
        )
        await self._transaction(statements)

    async def summaries(self, user: str) -> list[RoomSummary]:
        rooms = await self.rooms_of(user)
        if not rooms:
            return []
        rows = await self._fetch(
            "SELECT m.room_id, m.last_read,"
            " (SELECT MAX(seq) FROM messages x WHERE x.room_id = m.room_id),"
            " (SELECT COUNT(*) FROM messages x WHERE x.room_id = m.room_id"
            "   AND x.seq > m.last_read AND x.sender <> m.user_id)"
            " FROM members m WHERE m.user_id = ?",
            user,
        )
        info = {r[0]: (int(r[1]), -1 if r[2] is None else int(r[2]), int(r[3])) for r in rows}
        out = []
        for room in rooms:
            last_read, head, unread = info.get(room.id, (-1, -1, 0))
            out.append(RoomSummary(room, head, last_read, unread))
        return out
