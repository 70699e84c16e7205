"""The persistence worker: the message stream into the store, in batches.

Consumer group `<prefix>.persist`. Each batch is written in one transaction
and committed to Kafka only afterwards; the store's save is idempotent (seq
primary key, unique (room, sender, client_id)), so a batch written twice, by a
restarted worker or by two workers during a rebalance, leaves one row each.
"""

from __future__ import annotations

import asyncio
import logging

from parley.log.base import Log, LogRecord
from parley.log.records import decode_message, messages_topic
from parley.metrics import Metrics
from parley.storage.base import Store, StoreUnavailable
from parley.workers.runner import run_worker

logger = logging.getLogger(__name__)


def persist_group(prefix: str) -> str:
    return f"{prefix}.persist"


async def run_persist(
    log: Log, store: Store, prefix: str, stop: asyncio.Event, metrics: Metrics | None = None
) -> None:
    written = (
        metrics.counter("parley_persisted_total", "messages written to the database")
        if metrics
        else None
    )
    consumer = log.group(messages_topic(prefix), persist_group(prefix))
    if metrics is not None:
        metrics.gauge(
            "parley_persist_lag", "records the persistence worker has not read", consumer.lag
        )

    async def handle(records: list[LogRecord]) -> None:
        messages = [m for m in (decode_message(r) for r in records) if m is not None]
        n = await store.save_messages(messages)
        if written is not None:
            written.value += n
        logger.debug(
            "persisted %d new of %d records (%s)",
            n,
            len(records),
            ", ".join(f"{r.partition}:{r.offset}" for r in records[:1] + records[-1:]),
        )

    await run_worker("persist", consumer, handle, stop, retriable=(StoreUnavailable,))
