"""The persistence worker: the message stream into the store, in batches.

Consumer group `<prefix>.persist`. Each batch is written in one transaction
and committed to Kafka only afterwards; the store's save is idempotent (seq
primary key, unique (room, sender, client_id)), so a batch written twice, by a
restarted worker or by two workers during a rebalance, leaves one row each.
"""

from __future__ import annotations

import asyncio
import logging

from parley.log.base import GroupConsumer, Log, LogRecord
from parley.log.records import decode_message, messages_topic
from parley.metrics import Metrics
from parley.storage.base import Store, StoreUnavailable
from parley.workers.runner import next_offsets, run_worker

logger = logging.getLogger(__name__)


def persist_group(prefix: str) -> str:
    return f"{prefix}.persist"


class PersistWorker:
    """Built once; `run` may be restarted by a supervisor after a crash."""

    def __init__(self, log: Log, store: Store, prefix: str, metrics: Metrics) -> None:
        self._log = log
        self._store = store
        self._prefix = prefix
        self._consumer: GroupConsumer | None = None
        self._written = metrics.counter(
            "parley_persisted_total", "messages written to the database"
        )
        metrics.gauge("parley_persist_lag", "records the persistence worker has not read", self.lag)

    def lag(self) -> int:
        return self._consumer.lag() if self._consumer is not None else 0

    async def _handle(self, records: list[LogRecord]) -> None:
        messages = [m for m in (decode_message(r) for r in records) if m is not None]
        progress = (messages_topic(self._prefix), next_offsets(records))
        n = await self._store.save_messages(messages, progress)
        self._written.value += n
        logger.debug("persisted %d new of %d records", n, len(records))

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer = self._log.group(messages_topic(self._prefix), persist_group(self._prefix))
        await run_worker(
            "persist", self._consumer, self._handle, stop, retriable=(StoreUnavailable,)
        )
