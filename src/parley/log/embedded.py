"""The embedded log: one process, no broker, same contract as Kafka.

It is the default for `make run` and single-node use. Durable topics are kept
in memory and appended to one file per partition under the data directory, so
that a restart keeps offsets increasing and the idempotency window intact;
ephemeral topics (typing, presence) live in memory only and keep a bounded
tail. File writes happen once per event-loop turn for all records appended in
it, and a record's future resolves after that write, like `acks=all`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from parley.log.base import (
    BatchHandler,
    Delivered,
    GroupConsumer,
    Log,
    LogRecord,
    LogUnavailable,
    TailReader,
    TopicSpec,
)

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">qqII")
EPHEMERAL_KEEP = 10_000
RETENTION_CHECK_S = 30.0


class _Partition:
    """One partition: `records` from `records[0].offset` to `next_offset`, contiguous.

    `end` is the offset below which records are handed on (written, for a
    durable topic): readers and groups never see past it.
    """

    __slots__ = ("end", "file", "next_offset", "records", "timestamps")

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.timestamps: list[int] = []
        self.next_offset = 0
        self.end = 0
        self.file: BinaryIO | None = None

    def between(self, start: int, stop: int) -> list[LogRecord]:
        if start >= stop:
            return []
        return self.records[self.offset_index(start) : self.offset_index(stop)]

    def offset_index(self, offset: int) -> int:
        """Index in `records` of the first record at or after `offset`."""
        if not self.records:
            return 0
        first = self.records[0].offset
        return max(0, min(len(self.records), offset - first))

    def index_for_time(self, ts_ms: int) -> int:
        return bisect.bisect_left(self.timestamps, ts_ms)


class _Topic:
    def __init__(self, spec: TopicSpec) -> None:
        self.spec = spec
        self.partitions = [_Partition() for _ in range(spec.partitions)]
        self.readers: list[_EmbeddedTail] = []
        self.waiters: list[asyncio.Event] = []


class EmbeddedLog(Log):
    def __init__(self, data_dir: Path | None) -> None:
        self._dir = data_dir
        self._topics: dict[str, _Topic] = {}
        self._unflushed: list[tuple[_Topic, LogRecord, asyncio.Future[Delivered]]] = []
        self._flush_scheduled = False
        self._closed = False
        self._broken: str | None = None
        # File writes happen here, never on the event loop; one thread keeps them in order.
        self._io = ThreadPoolExecutor(1, thread_name_prefix="embedded-log")
        self._offsets_file = data_dir / "group-offsets.json" if data_dir else None
        self.group_offsets: dict[str, dict[str, dict[int, int]]] = {}
        self._retention_task: asyncio.Task[None] | None = None

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_CHECK_S)
            self.apply_retention()

    async def start(self) -> None:
        self._retention_task = asyncio.create_task(self._retention_loop(), name="log-retention")
        if self._dir is not None:
            self._dir.mkdir(parents=True, exist_ok=True)
            if self._offsets_file and self._offsets_file.exists():
                raw = json.loads(self._offsets_file.read_text())
                self.group_offsets = {
                    g: {t: {int(p): o for p, o in parts.items()} for t, parts in topics.items()}
                    for g, topics in raw.items()
                }

    async def stop(self) -> None:
        if self._closed:
            return
        if self._retention_task is not None:
            self._retention_task.cancel()
        self._flush()
        self._closed = True
        # Wait for the writes in flight, then close the files on the same thread.
        await asyncio.get_running_loop().run_in_executor(self._io, self._close_files)
        self._io.shutdown(wait=True)

    def _close_files(self) -> None:
        for topic in self._topics.values():
            for part in topic.partitions:
                if part.file is not None:
                    part.file.close()
                    part.file = None

    async def ensure_topic(self, spec: TopicSpec) -> int:
        topic = self._topics.get(spec.name)
        if topic is None:
            if spec.durable and self._dir is not None:
                # Like Kafka: an existing topic keeps its partition count.
                existing = sum(
                    1
                    for path in self._dir.glob(f"{spec.name}-*.log")
                    if path.stem[len(spec.name) + 1 :].isdigit()
                )
                if existing:
                    spec = TopicSpec(spec.name, existing, spec.retention_ms, spec.durable)
            topic = _Topic(spec)
            self._topics[spec.name] = topic
            if spec.durable and self._dir is not None:
                for i, part in enumerate(topic.partitions):
                    path = self._dir / f"{spec.name}-{i}.log"
                    self._load(path, spec.name, i, part, spec.retention_ms)
                    part.file = path.open("ab")
        return len(topic.partitions)

    @staticmethod
    def _load(
        path: Path, name: str, index: int, part: _Partition, retention_ms: int | None
    ) -> None:
        """Read a partition file; drop a torn tail, and records past retention.

        Expired records are cut from the front of the file (rewritten through a
        temporary file), but the offsets of the rest never change, and the last
        record is always kept so that offsets keep increasing after a restart.
        """
        if not path.exists():
            return
        data = path.read_bytes()
        cutoff = int(time.time() * 1000) - retention_ms if retention_ms is not None else None
        pos = 0
        good = 0
        keep_from = 0
        while pos + _HEADER.size <= len(data):
            offset, ts, klen, vlen = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + klen + vlen
            if end > len(data):
                break  # a torn write at the end: the record was never acknowledged
            if cutoff is not None and ts < cutoff and part.records:
                # Expired, and a later record exists or may: drop what came before.
                part.records.clear()
                part.timestamps.clear()
                keep_from = pos
            key = data[pos + _HEADER.size : pos + _HEADER.size + klen]
            value = data[pos + _HEADER.size + klen : end]
            part.records.append(LogRecord(name, index, offset, key, value, ts))
            part.timestamps.append(ts)
            part.next_offset = part.end = offset + 1
            pos = good = end
        if cutoff is not None and part.records and part.timestamps[0] < cutoff:
            # The oldest kept record is expired too; it stays on disk (it
            # carries the next offset) but nobody reads it any more.
            part.records.pop(0)
            part.timestamps.pop(0)
        if keep_from:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data[keep_from:good])
            tmp.replace(path)
        elif good < len(data):
            with path.open("r+b") as f:
                f.truncate(good)

    def produce(
        self, topic: str, partition: int, key: str, value: bytes
    ) -> asyncio.Future[Delivered]:
        if self._closed:
            raise LogUnavailable("the embedded log is stopped")
        if self._broken is not None:
            raise LogUnavailable(self._broken)
        t = self._topics[topic]
        part = t.partitions[partition]
        # Kept in memory: a copy without the spare buffer orjson leaves (orjson#483).
        value = bytes(memoryview(value))
        ts = int(time.time() * 1000)
        if part.timestamps and ts < part.timestamps[-1]:
            ts = part.timestamps[-1]  # keep timestamps monotonic for the time index
        record = LogRecord(topic, partition, part.next_offset, key.encode(), value, ts)
        part.next_offset += 1
        part.records.append(record)
        part.timestamps.append(ts)
        if not t.spec.durable and len(part.records) > EPHEMERAL_KEEP * 2:
            del part.records[:EPHEMERAL_KEEP]
            del part.timestamps[:EPHEMERAL_KEEP]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()
        self._unflushed.append((t, record, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Hand this loop turn's records to the writer thread, in one write per file.

        Records of durable topics are handed on (futures, readers) once their
        write is done, like `acks=all`; a single writer thread keeps batches in
        order. Ephemeral records are handed on at once.
        """
        self._flush_scheduled = False
        batch, self._unflushed = self._unflushed, []
        if not batch:
            return
        durable = [item for item in batch if item[0].spec.durable]
        ephemeral = [item for item in batch if not item[0].spec.durable]
        if ephemeral:
            self._hand_on(ephemeral)
        if not durable:
            return
        chunks: dict[int, tuple[BinaryIO, list[bytes]]] = {}
        for t, rec, _ in durable:
            f = t.partitions[rec.partition].file
            if f is not None:
                key = rec.key or b""
                chunks.setdefault(id(f), (f, []))[1].append(
                    _HEADER.pack(rec.offset, rec.timestamp_ms, len(key), len(rec.value))
                    + key
                    + rec.value
                )
        if not chunks:
            self._hand_on(durable)
            return
        written = asyncio.get_running_loop().run_in_executor(
            self._io, self._write, list(chunks.values())
        )
        written.add_done_callback(lambda f: self._written(f, durable))

    def _written(
        self,
        write: asyncio.Future[None],
        batch: list[tuple[_Topic, LogRecord, asyncio.Future[Delivered]]],
    ) -> None:
        exc = write.exception()
        if exc is None:
            self._hand_on(batch)
            return
        # A failed write (disk full, I/O error) is never acknowledged: the
        # batch fails, and so does every later produce until a restart reloads
        # what the files really hold.
        logger.error("embedded log write failed: %s", exc)
        self._broken = f"the embedded log cannot write: {exc}"
        for _, _, fut in batch:
            if not fut.done():
                fut.set_exception(LogUnavailable(self._broken))

    @staticmethod
    def _write(chunks: list[tuple[BinaryIO, list[bytes]]]) -> None:
        for f, parts in chunks:
            f.write(b"".join(parts))
            f.flush()

    def _hand_on(self, batch: list[tuple[_Topic, LogRecord, asyncio.Future[Delivered]]]) -> None:
        topics: dict[str, _Topic] = {}
        for t, rec, fut in batch:
            part = t.partitions[rec.partition]
            part.end = max(part.end, rec.offset + 1)
            if not fut.done():
                fut.set_result(Delivered(rec.partition, rec.offset))
            topics[t.spec.name] = t
        for t in topics.values():
            for reader in t.readers:
                reader.pump()
            for event in t.waiters:
                event.set()

    def tail(self, topic: str, since_ms: int | None, handler: BatchHandler) -> TailReader:
        return _EmbeddedTail(self, self._topics[topic], since_ms, handler)

    def group(self, topic: str, group: str) -> GroupConsumer:
        return _EmbeddedGroup(self, self._topics[topic], group)

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[LogRecord]:
        part = self._topics[topic].partitions[partition]
        return part.between(start, min(end, part.end))

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Forget durable records older than their topic's retention; how many.

        Memory only: the files are trimmed when they are loaded (`_load`).
        """
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        dropped = 0
        for t in self._topics.values():
            if not t.spec.durable or t.spec.retention_ms is None:
                continue
            for part in t.partitions:
                n = part.index_for_time(now_ms - t.spec.retention_ms)
                n = min(n, part.offset_index(part.end))
                if n:
                    del part.records[:n]
                    del part.timestamps[:n]
                    dropped += n
        return dropped

    async def ping(self) -> bool:
        return not self._closed and self._broken is None

    async def save_group_offsets(self) -> None:
        if self._offsets_file is not None:
            path, data = self._offsets_file, json.dumps(self.group_offsets)

            def save() -> None:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(data)
                tmp.replace(path)

            await asyncio.get_running_loop().run_in_executor(self._io, save)


class _EmbeddedTail(TailReader):
    """Hands over each partition's records from a position, once and in order."""

    def __init__(
        self, log: EmbeddedLog, topic: _Topic, since_ms: int | None, handler: BatchHandler
    ) -> None:
        self._log = log
        self._topic = topic
        self._since = since_ms
        self._handler = handler
        self._ends: dict[int, int] = {}
        self._position: dict[int, int] = {}
        self._running = False

    async def start(self) -> dict[int, int]:
        for i, part in enumerate(self._topic.partitions):
            self._ends[i] = part.end
            if self._since is None:
                self._position[i] = part.end
            else:
                idx = part.index_for_time(self._since)
                first = part.records[idx].offset if idx < len(part.records) else part.next_offset
                self._position[i] = min(first, part.end)
        self._running = True
        self._topic.readers.append(self)
        # After start() returns, like Kafka's reader thread: the caller sets up
        # its state from the start offsets before the first batch.
        asyncio.get_running_loop().call_soon(self.pump)
        return dict(self._position)

    def pump(self) -> None:
        if not self._running:
            return
        batch: list[LogRecord] = []
        for i, part in enumerate(self._topic.partitions):
            records = part.between(self._position[i], part.end)
            if records:
                batch.extend(records)
                self._position[i] = records[-1].offset + 1
        if batch:
            self._handler(batch)

    async def stop(self) -> None:
        self._running = False
        with contextlib.suppress(ValueError):
            self._topic.readers.remove(self)

    def end_offsets_at_start(self) -> dict[int, int]:
        return dict(self._ends)


class _EmbeddedGroup(GroupConsumer):
    """A group member that holds every partition (one process, one member)."""

    def __init__(self, log: EmbeddedLog, topic: _Topic, group: str) -> None:
        self._log = log
        self._topic = topic
        self._group = group
        self._positions: dict[int, int] = {}
        self._event = asyncio.Event()

    async def start(self) -> None:
        committed = self._log.group_offsets.get(self._group, {}).get(self._topic.spec.name, {})
        for i, part in enumerate(self._topic.partitions):
            first = part.records[0].offset if part.records else part.next_offset
            self._positions[i] = max(committed.get(i, 0), first)
        self._topic.waiters.append(self._event)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self._topic.waiters.remove(self._event)

    async def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        out = self._take(max_records)
        if out:
            return out
        self._event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        return self._take(max_records)

    def _take(self, max_records: int) -> list[LogRecord]:
        out: list[LogRecord] = []
        for i, part in enumerate(self._topic.partitions):
            if len(out) >= max_records:
                break
            chunk = part.between(self._positions[i], part.end)[: max_records - len(out)]
            if chunk:
                out.extend(chunk)
                self._positions[i] = chunk[-1].offset + 1
        return out

    async def commit(self, next_offsets: dict[int, int]) -> None:
        mine = self._log.group_offsets.setdefault(self._group, {}).setdefault(
            self._topic.spec.name, {}
        )
        for p, o in next_offsets.items():
            mine[p] = max(mine.get(p, 0), o)
        await self._log.save_group_offsets()

    def lag(self) -> int:
        return sum(
            max(0, part.end - self._positions.get(i, 0))
            for i, part in enumerate(self._topic.partitions)
        )
