"""The analytics worker: messages per room and minute, active users, delivery latency.

Two consumer groups, each counting exactly once (workers/counting.py):
`<prefix>.analytics` reads the messages topic (messages and senders per
room and minute; a send that reached the log twice counts once, keyed by
its (room, sender, client_id) in the store, as everywhere else);
`<prefix>.analytics-latency` reads the `fanout` events in which every
gateway reports, per room, a histogram of how long its messages took from
the producer to its sessions (produce → fan-out). The counts go to the
store, where `GET /api/stats` reads them for the room's owner, and to this
process's Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import time

from parley.log.base import GroupConsumer, Log, LogRecord
from parley.log.records import (
    LATENCY_BUCKETS_MS,
    decode_event,
    decode_message,
    events_topic,
    messages_topic,
)
from parley.metrics import Metrics
from parley.storage.base import CountsBatch, RoomMinute, Store, StoreUnavailable
from parley.workers.counting import count_once
from parley.workers.firsts import FirstSends
from parley.workers.runner import run_worker

ACTIVE_WINDOW_MS = 5 * 60 * 1000
PRUNE_EVERY_S = 600.0
ROOM_LABELS = 1000  # rooms with a series of their own in /metrics; the rest share `_other`


def analytics_group(prefix: str) -> str:
    return f"{prefix}.analytics"


def minute_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % 60_000


def message_counts(
    source: str, partition: int, expected: int | None, records: list[LogRecord]
) -> CountsBatch:
    """The batch's sends: the store counts those whose (room, sender, client_id) is new."""
    sends = []
    for r in records:
        msg = decode_message(r)
        if msg is not None:
            sends.append((msg.room, msg.sender, msg.client_id, minute_of(msg.ts_ms)))
    return CountsBatch(source, partition, expected, records[-1].offset + 1, sends=sends)


def latency_counts(
    source: str, partition: int, expected: int | None, records: list[LogRecord]
) -> CountsBatch:
    per_minute: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        event = decode_event(r)
        if event is None or event.kind != "fanout" or len(event.values) < 2:
            continue
        count, total = sum(event.values[:-1]), event.values[-1]
        key = (event.room, minute_of(r.timestamp_ms))
        c, s = per_minute.get(key, (0, 0))
        per_minute[key] = (c + count, s + total)
    return CountsBatch(
        source,
        partition,
        expected,
        records[-1].offset + 1,
        [
            RoomMinute(room, minute, latency_count=c, latency_sum_ms=s)
            for (room, minute), (c, s) in per_minute.items()
        ],
    )


class AnalyticsWorker:
    def __init__(
        self,
        log: Log,
        store: Store,
        prefix: str,
        metrics: Metrics,
        window_s: int,
        *,
        room_labels: bool = True,
    ) -> None:
        self._log = log
        self._window_ms = window_s * 1000
        self._firsts = FirstSends(self._window_ms)
        self._pruned = 0.0
        self._store = store
        self._prefix = prefix
        self._consumers: list[GroupConsumer] = []
        self._last_sent: dict[str, int] = {}  # sender -> when last seen sending (ms)
        # On a gateway's public /metrics, room ids would tell anyone which rooms
        # exist: there the counter has one series, `room="_all"`.
        self._room_labels = room_labels
        self._messages = metrics.labeled_counter(
            "parley_room_messages_total",
            "messages per room (rate() gives per minute)",
            "room",
            ROOM_LABELS,
        )
        self._latency = metrics.histogram(
            "parley_cluster_delivery_latency_seconds",
            "produce to fan-out latency, every gateway's sessions (from fanout events)",
            tuple(b / 1000 for b in LATENCY_BUCKETS_MS),
        )
        metrics.gauge(
            "parley_active_users", "distinct senders in the last 5 minutes", self.active_users
        )
        metrics.gauge("parley_analytics_lag", "records the analytics worker has not read", self.lag)

    def lag(self) -> int:
        return sum(c.lag() for c in self._consumers)

    def active_users(self) -> int:
        cutoff = int(time.time() * 1000) - ACTIVE_WINDOW_MS
        stale = [u for u, t in self._last_sent.items() if t < cutoff]
        for user in stale:
            del self._last_sent[user]
        return len(self._last_sent)

    async def _on_messages(self, records: list[LogRecord]) -> None:
        source = f"{messages_topic(self._prefix)}@{analytics_group(self._prefix)}"
        for r in await count_once(self._store, source, records, message_counts):
            msg = decode_message(r)
            if msg is not None and self._firsts.first(msg):
                self._messages.inc(msg.room if self._room_labels else "_all")
                self._last_sent[msg.sender] = max(self._last_sent.get(msg.sender, 0), msg.ts_ms)

        now = time.monotonic()
        if now - self._pruned > PRUNE_EVERY_S:
            self._pruned = now
            await self._store.forget_sends(int(time.time() * 1000) - self._window_ms)

    async def _on_events(self, records: list[LogRecord]) -> None:
        source = f"{events_topic(self._prefix)}@{analytics_group(self._prefix)}"
        for r in await count_once(self._store, source, records, latency_counts):
            event = decode_event(r)
            if event is not None and event.kind == "fanout" and len(event.values) >= 2:
                self._latency.observe_counts(event.values[:-1], event.values[-1] / 1000)

    async def run(self, stop: asyncio.Event) -> None:
        group = analytics_group(self._prefix)
        messages = self._log.group(messages_topic(self._prefix), group)
        events = self._log.group(events_topic(self._prefix), f"{group}-latency")
        self._consumers = [messages, events]
        retriable = (StoreUnavailable,)
        await asyncio.gather(
            run_worker("analytics", messages, self._on_messages, stop, retriable=retriable),
            run_worker("analytics-latency", events, self._on_events, stop, retriable=retriable),
        )
