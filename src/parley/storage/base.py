"""The Store interface: rooms, memberships, persisted messages, read state.

Contract, kept by sqlite.py and postgres.py and checked by
tests/contract/test_store_contract.py:

- `save_messages` is idempotent: saving a message again (same room and seq),
  or another message with the same (room, sender, client_id) — a retried send
  that reached the log twice — changes nothing. Within one call, messages are
  applied in seq order, so the first record of a retried send is the one kept.
  Saving a message of a DM room makes the room and its two members exist.
- Pages are ordered by seq and answered from the (room_id, seq) index.
- A failure raises StoreUnavailable (retriable); nothing is half-applied.
- The store knows only what it was given: a message the persistence worker
  has not written yet is not here; the gateway joins the log's recent window.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from parley.protocol.messages import ChatMessage


class StoreError(Exception):
    retriable = False


class StoreUnavailable(StoreError):
    """The database cannot be reached or failed; the same call may succeed later."""

    retriable = True


class RoomExists(StoreError):
    """A room with this id already exists."""


@dataclass(slots=True, frozen=True)
class Room:
    id: str
    name: str
    owner: str | None
    kind: str  # "group" or "dm"
    members: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class RoomMinute:
    """One room's counts for one minute (what the analytics worker adds up)."""

    room: str
    minute_ms: int
    messages: int = 0
    latency_count: int = 0
    latency_sum_ms: int = 0
    active_users: int = 0


@dataclass(slots=True, frozen=True)
class CountsBatch:
    """What one partition's batch adds to the counters, and the progress it moves.

    `expected` is the progress the worker read before the batch (None: no row
    yet); the batch is applied only if the stored progress still equals it.
    """

    source: str
    partition: int
    expected: int | None
    next_offset: int
    minutes: Sequence[RoomMinute] = ()
    active: Sequence[tuple[str, int, str]] = ()  # (room, minute_ms, user)
    # (room, sender, client_id, minute_ms) of messages: counted (messages and
    # active senders) only if their (room, sender, client_id) was never counted.
    sends: Sequence[tuple[str, str, str, int]] = ()


@dataclass(slots=True, frozen=True)
class RoomSummary:
    room: Room
    head: int
    last_read: int
    unread: int


class Store(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and apply pending schema migrations."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    @abc.abstractmethod
    async def create_room(
        self, room_id: str, name: str, owner: str, members: Sequence[str]
    ) -> Room:
        """Create a group room; raise RoomExists if the id is taken."""

    @abc.abstractmethod
    async def get_room(self, room_id: str) -> Room | None: ...

    @abc.abstractmethod
    async def members(self, room_id: str) -> frozenset[str] | None:
        """The members, or None when the room does not exist."""

    @abc.abstractmethod
    async def rooms_of(self, user: str) -> list[Room]: ...

    @abc.abstractmethod
    async def room_ids_of(self, user: str) -> list[str]:
        """The ids of the user's rooms, sorted: what a connection needs, without members."""

    @abc.abstractmethod
    async def room_ids_of_users(self, users: Sequence[str]) -> dict[str, list[str]]:
        """room_ids_of for many users in one query: every user is a key."""

    @abc.abstractmethod
    async def add_member(self, room_id: str, user: str) -> bool:
        """True if the user was added (False: already a member)."""

    @abc.abstractmethod
    async def remove_member(self, room_id: str, user: str) -> bool:
        """True if the user was a member."""

    @abc.abstractmethod
    async def save_messages(
        self,
        messages: Sequence[ChatMessage],
        progress: tuple[str, Mapping[int, int]] | None = None,
    ) -> int:
        """Persist a batch atomically; return how many rows were new.

        `progress` is (topic, next offset per partition) of the batch, saved in
        the same transaction and never moved back: it says that every message
        below it is stored.
        """

    @abc.abstractmethod
    async def persisted(self, topic: str) -> dict[int, int]:
        """The next offset per partition below which every message is stored.

        Workers other than persistence keep their own progress here under a
        source name of their own (`add_counts`).
        """

    @abc.abstractmethod
    async def add_counts(self, batch: CountsBatch) -> bool:
        """Add a batch to the counters if its progress is still `expected`; False if not.

        The progress move and the additions are one transaction: a batch that
        a restarted or rebalanced worker reads again is refused, not counted twice.
        """

    @abc.abstractmethod
    async def forget_sends(self, before_ms: int) -> int:
        """Drop counted sends older than this (past the idempotency window); how many."""

    @abc.abstractmethod
    async def active_users(self, room_id: str, since_ms: int) -> int:
        """How many distinct members sent in the room from `since_ms` on."""

    @abc.abstractmethod
    async def room_stats(self, room_id: str, since_ms: int) -> list[RoomMinute]:
        """The room's minutes from `since_ms` on, oldest first, with active users counted."""

    @abc.abstractmethod
    async def history(self, room_id: str, before: int | None, limit: int) -> list[ChatMessage]:
        """The `limit` newest messages with seq < before, oldest first."""

    @abc.abstractmethod
    async def range(
        self, room_id: str, after: int, before: int | None, limit: int
    ) -> list[ChatMessage]:
        """The `limit` newest messages with after < seq < before, oldest first."""

    @abc.abstractmethod
    async def head(self, room_id: str) -> int:
        """The highest stored seq of the room, -1 if none."""

    @abc.abstractmethod
    async def set_last_read(self, room_id: str, user: str, seq: int) -> None:
        """Move the member's read mark forward (never back)."""

    @abc.abstractmethod
    async def summaries(self, user: str) -> list[RoomSummary]:
        """The user's rooms with head, last_read and unread (others' messages)."""
