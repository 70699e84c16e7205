"""The Log contract of `parley.log.base`, run by every implementation.

One suite, three targets: the embedded log backed by files, the embedded log
in memory, and Apache Kafka (the local broker, a fresh topic per test). A
test here states a guarantee of the `base.py` docstring; an implementation
that needs a test of its own (the file format of the embedded log) gets it at
the end of the file, outside the parametrized suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from parley.log.base import (
    Delivered,
    GroupConsumer,
    Log,
    LogRecord,
    LogUnavailable,
    TopicSpec,
    partition_for,
)
from parley.log.embedded import EmbeddedLog
from parley.log.kafka import KafkaLog
from tests.topics import drop_topics, scratch_name

PARTITIONS = 3
WAIT_S = 20.0  # the longest a record may take to reach a reader (Kafka: group joins)
QUIET_S = 0.5  # how long a reader is watched to see that nothing more arrives

L = TypeVar("L", bound=Log)
Place = tuple[int, int]  # (partition, offset)


# Fixtures -------------------------------------------------------------------


@pytest.fixture
def topic() -> str:
    return scratch_name("contract-", 24)


@pytest.fixture(params=["file", "memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def log(request: pytest.FixtureRequest, tmp_path: Path, topic: str) -> AsyncIterator[Log]:
    kind: str = request.param
    bootstrap: str | None = None
    impl: Log
    if kind == "file":
        impl = EmbeddedLog(tmp_path / "log")
    elif kind == "memory":
        impl = EmbeddedLog(None)
    else:
        bootstrap = str(request.getfixturevalue("kafka_bootstrap"))
        impl = KafkaLog(bootstrap, client_id=f"contract-{uuid.uuid4().hex[:8]}")
    await impl.start()
    try:
        yield impl
    finally:
        await impl.stop()
        if bootstrap is not None:
            await asyncio.to_thread(drop_topics, bootstrap, [topic])


@contextlib.asynccontextmanager
async def started(log: L) -> AsyncIterator[L]:
    await log.start()
    try:
        yield log
    finally:
        await log.stop()


# Helpers --------------------------------------------------------------------


class Collector:
    """A tail handler that keeps every batch it is handed, in order."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []
        self.calls = 0

    def __call__(self, batch: list[LogRecord]) -> None:
        self.calls += 1
        self.records.extend(batch)

    async def wait_for(self, count: int, timeout: float = WAIT_S) -> None:
        await eventually(lambda: len(self.records) >= count, timeout, f"{count} records")

    def places(self) -> list[Place]:
        return [(r.partition, r.offset) for r in self.records]


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def key_of(partition: int) -> str:
    return f"room-{partition}"


def now_ms() -> int:
    return int(time.time() * 1000)


async def produce_all(log: Log, topic: str, items: Sequence[tuple[int, bytes]]) -> list[Delivered]:
    """Produce every (partition, value) at once, then wait for all of them."""
    futures = [log.produce(topic, p, key_of(p), v) for p, v in items]
    return await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)


def spread(
    count: int, tag: str, partitions: Iterable[int] = range(PARTITIONS)
) -> list[tuple[int, bytes]]:
    parts = list(partitions)
    return [(parts[i % len(parts)], f"{tag}-{i}".encode()) for i in range(count)]


def places(delivered: Iterable[Delivered]) -> list[Place]:
    return [(d.partition, d.offset) for d in delivered]


def assert_in_order_per_partition(seen: Sequence[Place]) -> None:
    """Offsets handed over strictly increase within each partition (no repeat, no reorder)."""
    last: dict[int, int] = {}
    for partition, offset in seen:
        assert offset > last.get(partition, -1), (
            f"partition {partition}: offset {offset} handed over after {last[partition]}"
        )
        last[partition] = offset


def next_offsets(delivered: Iterable[Delivered], base: dict[int, int]) -> dict[int, int]:
    ends = dict(base)
    for d in delivered:
        ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
    return ends


async def poll_until(
    consumer: GroupConsumer, count: int, timeout: float = WAIT_S
) -> list[LogRecord]:
    got: list[LogRecord] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"polled {len(got)} of {count} records in {timeout}s")
        got.extend(await consumer.poll(500, 0.2))
    return got


async def poll_quiet(consumer: GroupConsumer, seconds: float = QUIET_S) -> list[LogRecord]:
    """What a consumer still hands over in `seconds` (expected: nothing)."""
    got: list[LogRecord] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend(await consumer.poll(500, 0.1))
    return got


@contextlib.asynccontextmanager
async def member(log: Log, topic: str, group: str) -> AsyncIterator[GroupConsumer]:
    consumer = log.group(topic, group)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def run_tail(
    log: Log,
    topic: str,
    since_ms: int | None,
    body: Callable[[Collector, dict[int, int], dict[int, int]], Awaitable[None]],
) -> Collector:
    """Start a tail reader, run `body(collector, starts, ends)`, and always stop the reader."""
    collector = Collector()
    reader = log.tail(topic, since_ms, collector)
    try:
        starts = await reader.start()
        await body(collector, starts, reader.end_offsets_at_start())
    finally:
        await reader.stop()
    return collector


# Topics and producing --------------------------------------------------------


async def test_ensure_topic_returns_the_partition_count_and_is_idempotent(
    log: Log, topic: str
) -> None:
    assert await log.ensure_topic(TopicSpec(topic, PARTITIONS)) == PARTITIONS
    assert await log.ensure_topic(TopicSpec(topic, PARTITIONS)) == PARTITIONS
    # The topic exists: its real count is answered, not the one asked for.
    assert await log.ensure_topic(TopicSpec(topic, PARTITIONS + 2)) == PARTITIONS
    assert await log.ensure_topic(TopicSpec(f"{topic}-one", 1)) == 1
    assert await log.ping() is True


async def test_produce_resolves_with_partition_and_offset(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    first = await produce_all(log, topic, spread(PARTITIONS, "a"))
    second = await produce_all(log, topic, spread(PARTITIONS, "b"))
    for round_ in (first, second):
        assert all(isinstance(d, Delivered) for d in round_)
        assert [d.partition for d in round_] == list(range(PARTITIONS))
        assert all(d.offset >= 0 for d in round_)
    for a, b in zip(first, second, strict=True):
        assert b.offset > a.offset


async def test_thousands_of_produces_in_flight_keep_order_per_partition(
    log: Log, topic: str
) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    items = spread(2000, "v")
    futures = [log.produce(topic, p, key_of(p), v) for p, v in items]
    # produce() returned 2,000 times without waiting for one delivery.
    assert not any(f.done() for f in futures)
    delivered = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)

    assert [d.partition for d in delivered] == [p for p, _ in items]
    assert len(set(places(delivered))) == len(items), "an offset was given twice"
    assert_in_order_per_partition(places(delivered))  # in produce order, too

    async def read_all(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        await collector.wait_for(len(items))

    collector = await run_tail(log, topic, 0, read_all)
    by_place = {(r.partition, r.offset): r for r in collector.records}
    for (p, value), d in zip(items, delivered, strict=True):
        record = by_place[(d.partition, d.offset)]
        assert (record.topic, record.partition, record.key, record.value) == (
            topic,
            p,
            key_of(p).encode(),
            value,
        )
    for p in range(PARTITIONS):
        read = [r.value for r in collector.records if r.partition == p]
        assert read == [v for q, v in items if q == p], f"partition {p} read out of order"


async def test_stop_delivers_what_is_in_flight_and_produce_after_it_fails(
    log: Log, topic: str
) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    futures = [log.produce(topic, p, key_of(p), v) for p, v in spread(50, "late")]
    await log.stop()
    delivered = await asyncio.wait_for(asyncio.gather(*futures), WAIT_S)
    assert len(set(places(delivered))) == 50
    with pytest.raises(LogUnavailable) as caught:
        log.produce(topic, 0, key_of(0), b"after stop")
    assert caught.value.retriable is True


# TailReader -------------------------------------------------------------------


async def test_tail_from_the_end_gets_exactly_what_follows_in_batches(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    before = await produce_all(log, topic, spread(30, "before"))
    ends_before = next_offsets(before, {})
    after_items = spread(300, "after")
    after: list[Delivered] = []

    async def body(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        assert starts == ends_before
        assert ends == ends_before
        after.extend(await produce_all(log, topic, after_items))
        await collector.wait_for(len(after_items))
        await asyncio.sleep(QUIET_S)

    collector = await run_tail(log, topic, None, body)
    assert sorted(collector.places()) == sorted(places(after))
    assert_in_order_per_partition(collector.places())
    assert [r.value for r in collector.records if r.partition == 0] == [
        v for p, v in after_items if p == 0
    ]
    assert 1 <= collector.calls < len(after_items), "one callback per batch, never per record"


async def test_tail_from_a_timestamp_gets_exactly_the_records_after_it(
    log: Log, topic: str
) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    old = await produce_all(log, topic, spread(30, "old"))
    since = now_ms() + 1  # after every `old` record's timestamp
    await asyncio.sleep(0.02)
    # Partition 2 gets nothing after `since`: its reader starts at its end.
    recent = await produce_all(log, topic, spread(200, "recent", partitions=(0, 1)))
    ends_now = next_offsets(recent, next_offsets(old, {}))
    live: list[Delivered] = []

    async def body(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        assert ends == ends_now
        assert starts == {
            0: min(d.offset for d in recent if d.partition == 0),
            1: min(d.offset for d in recent if d.partition == 1),
            2: ends_now[2],
        }
        await collector.wait_for(len(recent))
        live.extend(await produce_all(log, topic, spread(60, "live")))
        await collector.wait_for(len(recent) + len(live))
        await asyncio.sleep(QUIET_S)

    collector = await run_tail(log, topic, since, body)
    assert sorted(collector.places()) == sorted(places(recent) + places(live))
    assert_in_order_per_partition(collector.places())
    assert collector.calls < len(recent) + len(live)


async def test_tail_started_with_records_in_flight_hands_over_none_below_its_start(
    log: Log, topic: str
) -> None:
    """start() returns "the first offset it will hand over": nothing older may follow."""
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    await produce_all(log, topic, spread(PARTITIONS, "warm-up"))  # see the next test
    in_flight = [log.produce(topic, p, key_of(p), v) for p, v in spread(30, "flight")]
    later: list[Delivered] = []
    first: dict[int, int] = {}

    async def body(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        first.update(starts)
        await asyncio.wait_for(asyncio.gather(*in_flight), WAIT_S)
        later.extend(await produce_all(log, topic, spread(30, "later")))
        await eventually(
            lambda: set(places(later)) <= set(collector.places()), WAIT_S, "the later records"
        )
        await asyncio.sleep(QUIET_S)

    collector = await run_tail(log, topic, None, body)
    below = [(p, o) for p, o in collector.places() if o < first[p]]
    assert below == [], f"records below the start offsets {first} handed over: {below[:5]}"
    assert len(set(collector.places())) == len(collector.places()), "a record handed over twice"
    assert_in_order_per_partition(collector.places())


async def test_tail_from_a_timestamp_with_records_in_flight_hands_each_over_once_in_order(
    log: Log, topic: str
) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    # One record first, before `since`: the topic is served (see the next test).
    await produce_all(log, topic, spread(PARTITIONS, "warm-up"))
    await asyncio.sleep(0.002)
    since = now_ms()
    in_flight = [log.produce(topic, p, key_of(p), v) for p, v in spread(30, "flight")]
    delivered: list[Delivered] = []

    async def body(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        delivered.extend(await asyncio.wait_for(asyncio.gather(*in_flight), WAIT_S))
        await collector.wait_for(len(in_flight))
        await asyncio.sleep(QUIET_S)

    collector = await run_tail(log, topic, since, body)
    assert sorted(set(collector.places())) == sorted(places(delivered))
    assert len(collector.places()) == len(delivered), (
        f"{len(collector.places())} hand-overs for {len(delivered)} records"
    )
    assert_in_order_per_partition(collector.places())


async def test_a_tail_starts_right_after_ensure_topic(log: Log, topic: str) -> None:
    """ensure_topic returns once the topic can be used: a reader started then starts.

    Kafka: a new partition's leader may not answer at once, and a start that
    meets that must wait and retry, or fail with LogUnavailable; never let a raw
    client error out. The race is short, so fresh topics are tried 20 times.
    """
    for i in range(20):
        name = f"{topic}-{i}"
        await log.ensure_topic(TopicSpec(name, PARTITIONS))
        reader = log.tail(name, None, Collector())
        try:
            starts = await reader.start()
        finally:
            await reader.stop()
        assert starts == {p: 0 for p in range(PARTITIONS)}, f"attempt {i}"


# GroupConsumer ------------------------------------------------------------------


async def test_group_consumer_polls_everything_in_order(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    delivered = await produce_all(log, topic, spread(300, "g"))
    async with member(log, topic, f"group-{uuid.uuid4().hex}") as consumer:
        got = await poll_until(consumer, len(delivered))
        got += await poll_quiet(consumer)
    seen = [(r.partition, r.offset) for r in got]
    assert sorted(seen) == sorted(places(delivered))
    assert_in_order_per_partition(seen)
    assert all(r.topic == topic and r.key == key_of(r.partition).encode() for r in got)


async def test_a_new_member_resumes_after_the_commit(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    delivered = await produce_all(log, topic, spread(90, "c"))
    offsets = {p: [d.offset for d in delivered if d.partition == p] for p in range(PARTITIONS)}
    # Partition 0: 10 done; partition 1: 20 done; partition 2: all 30 done.
    commit = {0: offsets[0][10], 1: offsets[1][20], 2: offsets[2][-1] + 1}
    group = f"group-{uuid.uuid4().hex}"
    async with member(log, topic, group) as first:
        await poll_until(first, len(delivered))
        await first.commit(commit)

    expected = {(p, o) for p, o in places(delivered) if o >= commit[p]}
    assert len(expected) == 30
    async with member(log, topic, group) as second:
        got = await poll_until(second, len(expected))
        more = await produce_all(log, topic, spread(6, "more"))
        got += await poll_until(second, len(more))
        got += await poll_quiet(second)
    seen = [(r.partition, r.offset) for r in got]
    before = [(p, o) for p, o in seen if o < commit[p]]
    assert before == [], f"records before the commit handed over again: {before[:5]}"
    assert sorted(seen) == sorted(expected | set(places(more)))


async def test_two_groups_each_see_everything(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    delivered = await produce_all(log, topic, spread(120, "two"))
    async with (
        member(log, topic, f"one-{uuid.uuid4().hex}") as one,
        member(log, topic, f"two-{uuid.uuid4().hex}") as two,
    ):
        got_one, got_two = await asyncio.gather(
            poll_until(one, len(delivered)), poll_until(two, len(delivered))
        )
    for got in (got_one, got_two):
        assert sorted((r.partition, r.offset) for r in got) == sorted(places(delivered))


# partition_for ------------------------------------------------------------------


# Reading a range on demand -----------------------------------------------------


async def test_read_returns_exactly_the_range_in_order(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    delivered = await produce_all(log, topic, spread(60, "r"))
    offsets = sorted(d.offset for d in delivered if d.partition == 1)
    start, end = offsets[3], offsets[15]
    got = await log.read(topic, 1, start, end)
    assert [r.offset for r in got] == [o for o in offsets if start <= o < end]
    assert all(r.partition == 1 and r.key == key_of(1).encode() for r in got)
    values = {
        (d.partition, d.offset): v for d, (_, v) in zip(delivered, spread(60, "r"), strict=True)
    }
    assert [r.value for r in got] == [values[(1, r.offset)] for r in got]


async def test_read_past_the_end_stops_at_the_end(log: Log, topic: str) -> None:
    await log.ensure_topic(TopicSpec(topic, PARTITIONS))
    delivered = await produce_all(log, topic, spread(9, "e"))
    offsets = sorted(d.offset for d in delivered if d.partition == 2)
    got = await log.read(topic, 2, offsets[1], offsets[-1] + 1000)
    assert [r.offset for r in got] == offsets[1:]
    assert await log.read(topic, 2, offsets[-1] + 1, offsets[-1] + 10) == []
    assert await log.read(topic, 2, 5, 5) == []


def test_partition_for_is_the_crc32_of_the_key() -> None:
    # CRC-32 of "123456789" is the standard check value 0xCBF43926.
    for n in (1, 7, 12, 64):
        assert partition_for("123456789", n) == 0xCBF43926 % n
    # Pinned: changing these moves every room to another partition.
    assert [partition_for(k, 12) for k in ("general", "dm:alice:bob", "random")] == [6, 1, 5]
    assert partition_for("general", 12) == partition_for("general", 12)


def test_partition_for_spreads_keys_over_every_partition() -> None:
    counts = [0] * 12
    for i in range(12_000):
        p = partition_for(f"room-{i}", 12)
        assert 0 <= p < 12
        counts[p] += 1
    assert min(counts) > 800 and max(counts) < 1200, counts


# The embedded log's files ---------------------------------------------------------


def log_files(folder: Path, topic: str) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.name.startswith(topic) and f.stat().st_size)


async def read_back(log: Log, topic: str, count: int) -> list[LogRecord]:
    async def wait(collector: Collector, starts: dict[int, int], ends: dict[int, int]) -> None:
        await collector.wait_for(count)
        await asyncio.sleep(0.05)

    return (await run_tail(log, topic, 0, wait)).records


async def test_file_log_restart_brings_records_back_and_offsets_continue(tmp_path: Path) -> None:
    topic = "restart"
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, PARTITIONS))
        old = await produce_all(log, topic, spread(30, "old"))
        before = await read_back(log, topic, len(old))

    async with started(EmbeddedLog(tmp_path)) as log:
        assert await log.ensure_topic(TopicSpec(topic, PARTITIONS)) == PARTITIONS
        after = await read_back(log, topic, len(old))
        assert after == before  # same offsets, keys, values and timestamps
        new = await produce_all(log, topic, spread(PARTITIONS, "new"))
        ends = next_offsets(old, {})
        assert {d.partition: d.offset for d in new} == ends


async def test_file_log_restart_drops_records_past_retention(tmp_path: Path) -> None:
    topic = "retained"
    spec = TopicSpec(topic, PARTITIONS, retention_ms=60_000)
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(spec)
        old = await produce_all(log, topic, spread(30, "old"))
    # Age every record of partition 0 but the last three by rewriting their timestamps.
    path = tmp_path / f"{topic}-0.log"
    data = bytearray(path.read_bytes())
    header = struct.Struct(">qqII")
    pos, entries = 0, []
    while pos < len(data):
        offset, _ts, klen, vlen = header.unpack_from(data, pos)
        entries.append((pos, offset, klen, vlen))
        pos += header.size + klen + vlen
    for pos, offset, klen, vlen in entries[:-3]:
        header.pack_into(data, pos, offset, now_ms() - 3_600_000, klen, vlen)
    path.write_bytes(bytes(data))
    size_before = path.stat().st_size

    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(spec)
        p0 = sorted(d.offset for d in old if d.partition == 0)
        assert [r.offset for r in await log.read(topic, 0, 0, 10_000)] == p0[-3:]
        p1 = sorted(d.offset for d in old if d.partition == 1)
        assert [r.offset for r in await log.read(topic, 1, 0, 10_000)] == p1
        new = await produce_all(log, topic, [(0, b"new")])
        assert new[0].offset == p0[-1] + 1  # offsets never go back
    assert path.stat().st_size < size_before


async def test_embedded_log_forgets_expired_records_while_running() -> None:
    topic = "retained-memory"
    async with started(EmbeddedLog(None)) as log:
        await log.ensure_topic(TopicSpec(topic, 1, retention_ms=1000))
        first = await produce_all(log, topic, [(0, b"a"), (0, b"b")])
        assert log.apply_retention(now_ms() + 500) == 0
        assert log.apply_retention(now_ms() + 5000) == 2
        assert await log.read(topic, 0, 0, 100) == []
        later = await produce_all(log, topic, [(0, b"c")])
        assert later[0].offset == first[-1].offset + 1


async def test_file_log_drops_a_torn_record_at_the_end(tmp_path: Path) -> None:
    topic = "torn"
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        old = await produce_all(log, topic, spread(5, "value", partitions=(0,)))
        kept = await read_back(log, topic, 5)
    (path,) = log_files(tmp_path, topic)
    path.write_bytes(path.read_bytes()[:-3])  # the last record's value cut short

    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        assert await read_back(log, topic, 4) == kept[:4]
        (new,) = await produce_all(log, topic, [(0, b"after the tear")])
        assert new.offset == old[3].offset + 1

    # The torn bytes are gone from the file: the new record reads back after a restart.
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        records = await read_back(log, topic, 5)
        assert records[:4] == kept[:4]
        assert (records[4].offset, records[4].value) == (new.offset, b"after the tear")


async def test_file_log_drops_a_partial_header_at_the_end(tmp_path: Path) -> None:
    topic = "header"
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        old = await produce_all(log, topic, spread(5, "value", partitions=(0,)))
        kept = await read_back(log, topic, 5)
    (path,) = log_files(tmp_path, topic)
    with path.open("ab") as f:
        f.write(b"\x00\x00\x00\x00\x00\x00\x00")

    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        assert await read_back(log, topic, 5) == kept
        (new,) = await produce_all(log, topic, [(0, b"next")])
        assert new.offset == old[-1].offset + 1
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        assert [r.value for r in await read_back(log, topic, 6)][-1] == b"next"


async def test_file_log_group_commit_survives_a_restart(tmp_path: Path) -> None:
    topic = "commits"
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        delivered = await produce_all(log, topic, spread(10, "c", partitions=(0,)))
        async with member(log, topic, "workers") as consumer:
            await poll_until(consumer, 10)
            await consumer.commit({0: delivered[6].offset})

    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, 1))
        async with member(log, topic, "workers") as consumer:
            got = await poll_until(consumer, 3)
            got += await poll_quiet(consumer, 0.1)
    assert [r.offset for r in got] == [d.offset for d in delivered[6:]]


async def test_file_log_restart_keeps_the_topics_partition_count(tmp_path: Path) -> None:
    """After a restart the topic exists: like Kafka, its real count is answered.

    Answering the count asked for instead would move rooms to other partitions
    when PARLEY_PARTITIONS changes, splitting each room's order in two.
    """
    topic = "fixed"
    async with started(EmbeddedLog(tmp_path)) as log:
        await log.ensure_topic(TopicSpec(topic, PARTITIONS))
        await produce_all(log, topic, spread(PARTITIONS, "x"))
    async with started(EmbeddedLog(tmp_path)) as log:
        assert await log.ensure_topic(TopicSpec(topic, PARTITIONS + 2)) == PARTITIONS


async def test_file_log_restart_keeps_each_count_when_topic_names_share_a_prefix(
    tmp_path: Path,
) -> None:
    """Topic "room" must not count the files of topic "room-b" as its partitions."""
    async with started(EmbeddedLog(tmp_path)) as log:
        assert await log.ensure_topic(TopicSpec("room", 3)) == 3
        assert await log.ensure_topic(TopicSpec("room-b", 2)) == 2
        await produce_all(log, "room", spread(3, "r"))
        await produce_all(log, "room-b", spread(2, "b", partitions=(0, 1)))
    async with started(EmbeddedLog(tmp_path)) as log:
        assert await log.ensure_topic(TopicSpec("room", 3)) == 3
        assert await log.ensure_topic(TopicSpec("room-b", 2)) == 2
        assert len(await read_back(log, "room", 3)) == 3
