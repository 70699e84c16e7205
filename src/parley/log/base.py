"""The Log interface: what the gateway and the workers may rely on.

Contract, kept by every implementation (embedded.py, kafka.py) and checked by
tests/contract/test_log_contract.py:

- A topic has a fixed number of partitions; a record's partition is chosen by
  the producer with `partition_for(key, partitions)`, the same stable hash on
  every node, so one room lives in one partition on every node.
- Order: records produced to one partition from one producer keep their order
  (the Kafka producer is idempotent, so retries never reorder or duplicate).
- `produce` never blocks: it returns a future resolved with the record's
  (partition, offset) once the record is durable (Kafka: `acks=all`), or failed
  with LogUnavailable. Many produces are in flight at once.
- Offsets increase strictly within a partition and are never reused; they may
  have gaps.
- Delivery to readers is at-least-once: a reader that restarts, or a group
  that rebalances, may see a record again. Readers deduplicate by offset.
- A TailReader reads every partition of a topic by manual assignment (no group,
  no rebalance), starting at a timestamp, and hands records to its handler in
  batches on the event loop: one callback per batch, never per record.
- A GroupConsumer shares a topic's partitions with the other members of its
  group, and resumes after the last committed offset.
- `read` fetches one partition's records in an offset range on demand (what
  retention has not removed yet): how a gateway fills a room's history when
  the persistence worker lags further back than its own memory reaches.
- A topic's `retention_ms` applies to a durable topic's old records; the
  store keeps the history that outlives them.
"""

from __future__ import annotations

import abc
import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class LogRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int


@dataclass(slots=True, frozen=True)
class Delivered:
    partition: int
    offset: int


@dataclass(slots=True, frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int | None = None  # None: the broker's default
    durable: bool = True  # False: ephemeral events, the embedded log keeps them in memory only


class LogError(Exception):
    """Base of log errors. `retriable` says whether the same call may succeed later."""

    retriable = False


class LogUnavailable(LogError):
    """The log cannot take or give records now (broker down, queue full, timeout)."""

    retriable = True


BatchHandler = Callable[[list[LogRecord]], None]


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key: CRC-32, the same on every node and every backend."""
    return zlib.crc32(key.encode()) % partitions


class TailReader(abc.ABC):
    """Follows every partition of one topic from a point in time."""

    @abc.abstractmethod
    async def start(self) -> dict[int, int]:
        """Start reading; return the first offset it will hand over, per partition."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    def end_offsets_at_start(self) -> dict[int, int]:
        """The end of each partition when the reader started: caught up once past these."""


class GroupConsumer(abc.ABC):
    """A member of a consumer group: poll batches, commit after the work is done."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        """The next records of the partitions this member holds (maybe none)."""

    @abc.abstractmethod
    async def commit(self, next_offsets: dict[int, int]) -> None:
        """Record that every record below these offsets (per partition) is done."""

    @abc.abstractmethod
    def lag(self) -> int:
        """Records not yet polled in the partitions this member holds (best known)."""


class Log(abc.ABC):
    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Flush what is in flight, then release everything."""

    @abc.abstractmethod
    async def ensure_topic(self, spec: TopicSpec) -> int:
        """Create the topic if absent; return its real partition count."""

    @abc.abstractmethod
    def produce(
        self, topic: str, partition: int, key: str, value: bytes
    ) -> asyncio.Future[Delivered]:
        """Append a record; never blocks. May raise LogUnavailable at once."""

    @abc.abstractmethod
    def tail(self, topic: str, since_ms: int | None, handler: BatchHandler) -> TailReader:
        """A reader of all partitions from `since_ms` (None: from the end)."""

    @abc.abstractmethod
    def group(self, topic: str, group: str) -> GroupConsumer: ...

    @abc.abstractmethod
    async def read(self, topic: str, partition: int, start: int, end: int) -> list[LogRecord]:
        """The partition's records with start <= offset < end, in order (those still kept)."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the log answers now (for /readyz)."""
