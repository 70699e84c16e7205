"""What this node has read of each room from the log.

Per room: a bounded window of its recent messages, the highest seq read, and
the idempotency map `(sender, client_id) -> first message`. The log is the
source of truth, every node reads every record, so every node builds the same
map in the same order: the first record of a retried send wins everywhere,
and no database sits on the send path.

`coverage` is the seq from which the window is complete: every message of the
room at or above it is in the window (or not yet read, and then it will reach
the hub live). Below it, history comes from the store. The seam is exact
because both sides are keyed by seq.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from parley.protocol.messages import TS_BITS, Ack, ChatMessage, message_id

# The idempotency map holds one pair per message of its window on every node
# (over a million in the soak), so a pair is two atoms: a str key and an int.
# Atoms are never tracked by the garbage collector (as objects, each full
# collection over them paused the loop for about a second), and the pair costs
# about 170 bytes instead of the 400 of a tuple key and an (id, seq, ts) tuple.
#   key:   the sender's length, then sender and client_id: exact for any strings.
#   value: seq << 68 | partition << 44 | ts_ms (the id is partition-seq).
PARTITION_BITS = 24  # Kafka tops out long before 16 million partitions
TS_MASK = (1 << TS_BITS) - 1
PARTITION_MASK = (1 << PARTITION_BITS) - 1
SEQ_SHIFT = TS_BITS + PARTITION_BITS


def pair_key(sender: str, client_id: str) -> str:
    return f"{len(sender)}:{sender}{client_id}"


def pack_first(partition: int, seq: int, ts_ms: int) -> int:
    return seq << SEQ_SHIFT | partition << TS_BITS | ts_ms


@dataclass(slots=True)
class RoomLog:
    coverage: int
    partition: int = 0
    head: int = -1
    window: deque[ChatMessage] = field(default_factory=deque)
    seen: dict[str, int] = field(default_factory=dict)  # pair_key -> pack_first
    name: str = ""

    def first(self, sender: str, client_id: str) -> Ack | None:
        """The ack of the first message read for this (sender, client_id), if any."""
        got = self.seen.get(pair_key(sender, client_id))
        if got is None:
            return None
        seq, partition = got >> SEQ_SHIFT, got >> TS_BITS & PARTITION_MASK
        return Ack(self.name, client_id, message_id(partition, seq), seq, got & TS_MASK)

    def after(self, seq: int) -> list[ChatMessage]:
        """Window messages with seq > `seq`, oldest first."""
        if not self.window or self.window[-1].seq <= seq:
            return []
        return [m for m in self.window if m.seq > seq]

    def before(self, seq: int | None) -> list[ChatMessage]:
        if seq is None:
            return list(self.window)
        return [m for m in self.window if m.seq < seq]


# However far persistence lags, a room keeps at most this many messages.
HARD_WINDOW_CAP = 100_000


class RoomLogs:
    """Windows are trimmed to `window_size`, but only below what the store holds.

    A message leaves the window only once the persistence worker has written
    it (`set_persisted`), so window + store always cover a room with no gap,
    however far persistence lags (up to HARD_WINDOW_CAP per room).
    """

    def __init__(self, window_size: int) -> None:
        self._rooms: dict[str, RoomLog] = {}
        self._window_size = window_size
        self._cap = max(window_size, HARD_WINDOW_CAP)
        self._partition_start: dict[int, int] = {}
        self._persisted: dict[int, int] = {}
        self._oversized: set[str] = set()  # windows held over size while the store lagged
        self.pairs = 0

    def set_partition_start(self, partition: int, offset: int) -> None:
        self._partition_start[partition] = offset

    def set_persisted(self, offsets: dict[int, int]) -> None:
        """The store's progress moved: windows held over size shrink now, not at
        their room's next message (a quiet room would keep them for good)."""
        self._persisted = offsets
        for room in list(self._oversized):
            state = self._rooms.get(room)
            if state is None or self._trim(state):
                self._oversized.discard(room)

    def _trim(self, state: RoomLog) -> bool:
        """Trim to the window size below the store's progress; True when done."""
        window = state.window
        persisted = self._persisted.get(state.partition, 0)
        while len(window) > self._window_size and (
            window[0].seq < persisted or len(window) > self._cap
        ):
            state.coverage = window.popleft().seq + 1
        return len(window) <= self._window_size

    def persisted(self, partition: int) -> int:
        """The store holds every message of the partition below this offset."""
        return self._persisted.get(partition, 0)

    def get(self, room: str) -> RoomLog | None:
        return self._rooms.get(room)

    def room(self, room: str, partition: int) -> RoomLog:
        state = self._rooms.get(room)
        if state is None:
            state = RoomLog(
                coverage=self._partition_start.get(partition, 0), partition=partition, name=room
            )
            self._rooms[room] = state
        return state

    def add(self, msg: ChatMessage, partition: int) -> tuple[Ack, bool]:
        """Record one message read from the log.

        Returns the message that stands for its (sender, client_id) — itself, or
        the earlier record of the same send — and whether it is new (to deliver).
        A re-read record (seq not above head) is never new.
        """
        state = self.room(msg.room, partition)
        first = state.first(msg.sender, msg.client_id)
        if msg.seq <= state.head:
            return (first or msg.ack()), False
        state.head = msg.seq
        if first is not None:
            return first, False
        state.seen[pair_key(msg.sender, msg.client_id)] = pack_first(partition, msg.seq, msg.ts_ms)
        ack = msg.ack()
        self.pairs += 1
        state.window.append(msg)
        if len(state.window) > self._window_size and not self._trim(state):
            self._oversized.add(msg.room)
        return ack, True

    def expire(self, older_than_ms: int) -> int:
        """Forget idempotency pairs older than the window; returns how many.

        `seen` is in log order (dicts keep insertion order), so each room stops
        at its first young entry: the cost is what expires, not what is kept.
        """
        removed = 0
        for state in self._rooms.values():
            stale = []
            for k, first in state.seen.items():
                if first & TS_MASK >= older_than_ms:
                    break
                stale.append(k)
            for k in stale:
                del state.seen[k]
            removed += len(stale)
        self.pairs -= removed
        return removed

    def __iter__(self) -> Iterator[tuple[str, RoomLog]]:
        return iter(self._rooms.items())
