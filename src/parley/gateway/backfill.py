"""Filling a room's history from the log when the store lags behind memory.

A room's window is complete from its `coverage` seq upward, and the store
holds every message below the persistence worker's progress. Normally the
two meet: a window is trimmed only below that progress. They come apart when
the worker is stopped or far behind and either this node started after the
messages were written (its read-back begins later) or the window hit its hard
cap. The gap between the store's progress and the window's coverage is then
read from the log partition itself, once per room (concurrent requests wait
for the same read), and prepended to the window, so that later requests are
answered from memory.
"""

from __future__ import annotations

import asyncio
import logging

from parley.gateway.roomlog import RoomLog, RoomLogs
from parley.log.base import Log, partition_for
from parley.log.records import decode_message
from parley.protocol.messages import ChatMessage

logger = logging.getLogger(__name__)


class Backfill:
    def __init__(self, log: Log, topic: str, rooms: RoomLogs) -> None:
        self._log = log
        self._topic = topic
        self._rooms = rooms
        self._locks: dict[str, asyncio.Lock] = {}

    def needed(self, state: RoomLog, partition: int, low: int) -> bool:
        """Whether [low, coverage) holds seqs that neither the store nor the window has."""
        return low < state.coverage and self._rooms.persisted(partition) < state.coverage

    async def cover(self, room: str, partitions: int, state: RoomLog, low: int) -> None:
        """Make window + store complete from seq `low` upward (raises LogUnavailable)."""
        partition = partition_for(room, partitions)
        if not self.needed(state, partition, low):
            return
        lock = self._locks.setdefault(room, asyncio.Lock())
        try:
            async with lock:
                while self.needed(state, partition, low):
                    coverage = state.coverage
                    start = max(low, self._rooms.persisted(partition))
                    found = await self._read(room, partition, start, coverage)
                    if state.coverage != coverage:
                        continue  # the window was trimmed meanwhile: measure again
                    state.window.extendleft(reversed(found))
                    state.coverage = start
                    logger.info(
                        "room %s: %d messages [%d, %d) read back from the log",
                        room,
                        len(found),
                        start,
                        coverage,
                    )
        finally:
            if not lock.locked() and self._locks.get(room) is lock:
                del self._locks[room]

    async def _read(self, room: str, partition: int, start: int, end: int) -> list[ChatMessage]:
        """The room's messages in [start, end), a retried send kept once (its first record)."""
        key = room.encode()
        out: list[ChatMessage] = []
        seen: set[tuple[str, str]] = set()
        for record in await self._log.read(self._topic, partition, start, end):
            if record.key != key:
                continue
            msg = decode_message(record)
            if msg is None or (msg.sender, msg.client_id) in seen:
                continue
            seen.add((msg.sender, msg.client_id))
            out.append(msg)
        return out
