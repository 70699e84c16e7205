"""Apache Kafka as the log, through confluent-kafka (librdkafka).

Why confluent-kafka: its producer reaches hundreds of thousands of records/s
from one Python process, and `consume(n)` hands over batches; aiokafka was
measured at a fraction of that (KAFKA-NOTES.md). Its calls block, so each
blocking loop runs in a thread of its own and crosses to the event loop once
per batch (`call_soon_threadsafe`), never once per record.

- Producer: idempotent, `acks=all`; one thread polls delivery reports and
  resolves the futures of a whole poll in one event-loop callback.
- TailReader: manual assignment of every partition, no group, so no rebalance
  can stall delivery; one thread runs `consume(1000)`.
- GroupConsumer: a real consumer group with manual commits, driven from a
  single-thread executor (librdkafka's consumer is used from one thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

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

_Report = tuple[asyncio.Future[Delivered], Any, int, int]
# A tail's records handed to the loop and not yet taken: past this, the reader
# waits (a long read-back at start slows the reader, it does not pile up).
MAX_WAITING = 4000


def _to_records(messages: list[Any]) -> list[LogRecord]:
    out: list[LogRecord] = []
    for m in messages:
        if m.error() is not None:
            if m.error().code() != KafkaError._PARTITION_EOF:
                logger.warning("kafka read error: %s", m.error())
            continue
        out.append(
            LogRecord(
                m.topic(), m.partition(), m.offset(), m.key(), m.value() or b"", m.timestamp()[1]
            )
        )
    return out


def _is_eof(message: Any) -> bool:
    err = message.error()
    return err is not None and err.code() == KafkaError._PARTITION_EOF


class KafkaLog(Log):
    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str,
        replication_factor: int | None = None,
        timeout_ms: int = 15000,
    ) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._rf = replication_factor
        self._timeout_ms = timeout_ms
        self._producer: Any = None
        self._admin: Any = None
        self._poller: threading.Thread | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[_Report] = []  # touched by the poller thread only

    def _base_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self._bootstrap, "client.id": self._client_id}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._admin = AdminClient(self._base_config())
        self._producer = Producer(
            {
                **self._base_config(),
                "enable.idempotence": True,
                "acks": "all",
                # Nagle's rule instead of a fixed wait: a send goes out at once
                # when no request is in flight, and what comes while one is
                # out waits for it and goes in the next, one batch. At chat's
                # usual rates that is no wait at all (a fixed 5 ms linger was
                # 5 of the big room's ~38 ms); under load the batches grow
                # with the broker's round trip. Nothing may rely on a head
                # start in the producer: a removal is ordered before later
                # messages by its record in the room's partition
                # (records.Removal), not by time.
                "linger.ms": 0,
                "max.in.flight.requests.per.connection": 1,
                "message.timeout.ms": self._timeout_ms,
                "queue.buffering.max.messages": 500_000,
                "compression.type": "lz4",
            }
        )
        self._running = True
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while self._running:
            self._producer.poll(0.05)
            self._hand_over()
        # Stopping: wait for what is in flight, then hand over the last reports.
        self._producer.flush(self._timeout_ms / 1000)
        self._producer.poll(0)
        self._hand_over()

    def _hand_over(self) -> None:
        """Resolve every report of one poll in one event-loop callback."""
        reports, self._reports = self._reports, []
        if reports and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._resolve, reports)

    def _on_delivery(self, future: asyncio.Future[Delivered], err: Any, msg: Any) -> None:
        # Runs in the poller thread, inside poll(): only collect.
        self._reports.append(
            (
                future,
                err,
                msg.partition() if err is None else -1,
                msg.offset() if err is None else -1,
            )
        )

    @staticmethod
    def _resolve(reports: list[_Report]) -> None:
        for future, err, partition, offset in reports:
            if future.done():
                continue
            if err is None:
                future.set_result(Delivered(partition, offset))
            else:
                future.set_exception(LogUnavailable(f"kafka delivery failed: {err.str()}"))

    async def stop(self) -> None:
        self._running = False
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
            self._poller = None

    async def ensure_topic(self, spec: TopicSpec) -> int:
        return await asyncio.to_thread(self._ensure_topic, spec)

    def _ensure_topic(self, spec: TopicSpec) -> int:
        md = self._admin.list_topics(timeout=10)
        if spec.name not in md.topics:
            rf = self._rf or min(3, len(md.brokers))
            config: dict[str, str] = {}
            if spec.retention_ms is not None:
                config["retention.ms"] = str(spec.retention_ms)
            if rf >= 3:
                config["min.insync.replicas"] = "2"
            futures = self._admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=rf,
                        config=config,
                    )
                ]
            )
            for fut in futures.values():
                try:
                    fut.result(timeout=15)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise LogUnavailable(f"cannot create topic {spec.name}: {exc}") from exc
        elif spec.retention_ms is not None:
            self._set_retention(spec.name, spec.retention_ms)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            topic = self._admin.list_topics(spec.name, timeout=10).topics.get(spec.name)
            if topic is not None and topic.error is None and topic.partitions:
                if all(p.leader >= 0 for p in topic.partitions.values()):
                    return len(topic.partitions)
            time.sleep(0.1)
        raise LogUnavailable(f"topic {spec.name} has no leaders after 15 s")

    def _set_retention(self, topic: str, retention_ms: int) -> None:
        """Apply a changed retention setting to an existing topic."""
        resource = ConfigResource(ResourceType.TOPIC, topic)
        current = self._admin.describe_configs([resource])[resource].result(timeout=15)
        entry = current.get("retention.ms")
        if entry is not None and entry.value == str(retention_ms):
            return
        resource.add_incremental_config(
            ConfigEntry(
                "retention.ms",
                str(retention_ms),
                incremental_operation=AlterConfigOpType.SET,
            )
        )
        for fut in self._admin.incremental_alter_configs([resource]).values():
            fut.result(timeout=15)
        logger.info("topic %s: retention.ms set to %d", topic, retention_ms)

    def produce(
        self, topic: str, partition: int, key: str, value: bytes
    ) -> asyncio.Future[Delivered]:
        loop = self._loop
        if loop is None or not self._running:
            raise LogUnavailable("the Kafka producer is not running")
        future: asyncio.Future[Delivered] = loop.create_future()
        try:
            self._producer.produce(
                topic,
                value,
                key.encode(),
                partition=partition,
                on_delivery=partial(self._on_delivery, future),
            )
        except BufferError:
            raise LogUnavailable("the Kafka producer queue is full") from None
        except KafkaException as exc:
            raise LogUnavailable(f"kafka produce failed: {exc}") from None
        return future

    def tail(self, topic: str, since_ms: int | None, handler: BatchHandler) -> TailReader:
        return _KafkaTail(self._base_config(), topic, since_ms, handler)

    def group(self, topic: str, group: str) -> GroupConsumer:
        return _KafkaGroup(self._base_config(), topic, group)

    async def read(self, topic: str, partition: int, start: int, end: int) -> list[LogRecord]:
        if start >= end:
            return []
        return await asyncio.to_thread(self._read, topic, partition, start, end)

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[LogRecord]:
        """A throwaway consumer, assigned at `start`, read up to `end` or the partition's end."""
        consumer = Consumer(
            {
                **self._base_config(),
                "group.id": f"parley-read-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 10,
            }
        )
        out: list[LogRecord] = []
        try:
            tp = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(tp, timeout=self._timeout_ms / 1000)
            stop = min(end, high)
            if max(start, low) >= stop:
                return out
            consumer.assign([TopicPartition(topic, partition, max(start, low))])
            deadline = time.monotonic() + self._timeout_ms / 1000
            while time.monotonic() < deadline:
                batch = consumer.consume(1000, 0.5)
                eof = any(_is_eof(m) for m in batch)
                for rec in _to_records(batch):
                    if rec.offset < stop:
                        out.append(rec)
                if (out and out[-1].offset >= stop - 1) or eof:
                    return out
            raise LogUnavailable(f"reading {topic}/{partition} from {start} timed out")
        except KafkaException as exc:
            raise LogUnavailable(f"cannot read {topic}/{partition}: {exc}") from None
        finally:
            consumer.close()

    async def ping(self) -> bool:
        def check() -> bool:
            try:
                md = self._admin.list_topics(timeout=2)
                return len(md.brokers) > 0
            except KafkaException:
                return False

        return await asyncio.to_thread(check)


class _KafkaTail(TailReader):
    def __init__(
        self, base: dict[str, Any], topic: str, since_ms: int | None, handler: BatchHandler
    ) -> None:
        self._config = {
            **base,
            "group.id": f"parley-tail-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 5,
            "fetch.min.bytes": 16384,
            "auto.offset.reset": "latest",
        }
        self._topic = topic
        self._since = since_ms
        self._handler = handler
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._ends: dict[int, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._waiting: list[LogRecord] | None = None  # handed over, not yet taken by the loop

    async def start(self) -> dict[int, int]:
        self._loop = asyncio.get_running_loop()
        starts = await asyncio.to_thread(self._assign)
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"tail-{self._topic}", daemon=True)
        self._thread.start()
        return starts

    def _assign(self) -> dict[int, int]:
        """Find the start offsets and assign; retried while a new topic settles."""
        deadline = time.monotonic() + 30
        while True:
            consumer = Consumer(self._config)
            try:
                return self._assign_with(consumer)
            except KafkaException as exc:
                # A new topic's leaders settle after creation (NOT_LEADER, not
                # flagged retriable by the client): retry any error until the deadline.
                consumer.close()
                if time.monotonic() > deadline:
                    raise LogUnavailable(f"cannot read {self._topic}: {exc}") from None
                time.sleep(0.2)

    def _assign_with(self, consumer: Any) -> dict[int, int]:
        md = consumer.list_topics(self._topic, timeout=10)
        partitions = sorted(md.topics[self._topic].partitions)
        starts: dict[int, int] = {}
        for p in partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=10)
            self._ends[p] = high
            starts[p] = high
        if self._since is not None:
            wanted = [TopicPartition(self._topic, p, self._since) for p in partitions]
            for tp in consumer.offsets_for_times(wanted, timeout=10):
                if tp.offset >= 0:
                    starts[tp.partition] = tp.offset
        consumer.assign([TopicPartition(self._topic, p, starts[p]) for p in partitions])
        self._consumer = consumer
        return starts

    def _run(self) -> None:
        assert self._loop is not None
        while self._running:
            try:
                # consume(n, timeout) waits until n records or the timeout: a
                # 100 ms floor on latency. poll() returns at the first record,
                # then consume(n, 0) takes what else is already fetched.
                first = self._consumer.poll(0.1)
                if first is None:
                    continue
                messages = [first, *self._consumer.consume(999, 0)]
            except KafkaException as exc:  # pragma: no cover - broker trouble
                logger.warning("tail reader of %s: %s", self._topic, exc)
                time.sleep(0.5)
                continue
            if messages:
                records = _to_records(messages)
                if records:
                    self._hand_over(records)
        self._consumer.close()

    def _hand_over(self, records: list[LogRecord]) -> None:
        """Give the loop this batch, or add it to the one still waiting for the loop.

        While the loop is busy, what the reader fetches meanwhile joins the
        batch that waits: the loop then takes one batch per turn, and the
        fan-out writes each socket once per turn (Hub.deliver_batch writes as
        it goes, so two batches in one turn would be two writes per socket).
        """
        assert self._loop is not None
        with self._lock:
            while self._running and self._waiting is not None and len(self._waiting) >= MAX_WAITING:
                self._taken.wait(0.1)
            if not self._running:
                return
            if self._waiting is not None:
                self._waiting.extend(records)
                return
            self._waiting = records
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody will take it
            with self._lock:
                self._waiting = None
            self._running = False

    def _deliver(self) -> None:
        with self._lock:
            records, self._waiting = self._waiting, None
            self._taken.notify()
        if records:
            self._handler(records)

    async def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def end_offsets_at_start(self) -> dict[int, int]:
        return dict(self._ends)


class _KafkaGroup(GroupConsumer):
    def __init__(self, base: dict[str, Any], topic: str, group: str) -> None:
        self._config = {
            **base,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 100,
            "fetch.min.bytes": 65536,
        }
        self._topic = topic
        self._consumer: Any = None
        # One thread: every call into this librdkafka consumer happens on it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"group-{group}")
        self._lag = 0
        self._lag_checked = 0.0

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        def create() -> None:
            self._consumer = Consumer(self._config)
            self._consumer.subscribe([self._topic])

        await self._call(create)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._call(self._consumer.close)
            self._consumer = None
        self._executor.shutdown(wait=False)

    async def poll(self, max_records: int, timeout_s: float) -> list[LogRecord]:
        def consume() -> list[LogRecord]:
            records = _to_records(self._consumer.consume(max_records, timeout_s))
            now = time.monotonic()
            if now - self._lag_checked > 1.0:
                self._lag_checked = now
                self._lag = self._measure_lag()
            return records

        result: list[LogRecord] = await self._call(consume)
        return result

    def _measure_lag(self) -> int:
        total = 0
        try:
            for tp in self._consumer.position(self._consumer.assignment()):
                _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    total += max(0, high - tp.offset)
        except KafkaException:
            return self._lag
        return total

    async def commit(self, next_offsets: dict[int, int]) -> None:
        offsets = [TopicPartition(self._topic, p, o) for p, o in next_offsets.items()]

        def commit() -> None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # A partition revoked by a rebalance: the next owner re-reads from
                # the last commit, and the idempotent write absorbs the repeat.
                logger.info("commit to %s skipped: %s", self._topic, exc)

        await self._call(commit)

    def lag(self) -> int:
        return self._lag
