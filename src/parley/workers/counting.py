"""Exactly-once counting: a batch's counts and the worker's progress in one transaction.

A consumer group hands a batch again after a crash or a rebalance. Counters
cannot absorb that by themselves (adding twice is wrong), so each worker that
counts keeps its own progress per partition in the store, and applies a
partition's fresh records (offset >= that progress) only if the progress is
still what it read (compare-and-set, `Store.add_counts`). A batch that another
member applied first is refused, the progress is read again, and what is
left (usually nothing) is applied. Kafka's committed offsets only say where
to start reading; the store's progress says what has been counted.
"""

from __future__ import annotations

from collections.abc import Callable

from parley.log.base import LogRecord
from parley.storage.base import CountsBatch, Store
from parley.workers.runner import by_partition

BuildBatch = Callable[[str, int, int | None, list[LogRecord]], CountsBatch]


async def count_once(
    store: Store, source: str, records: list[LogRecord], build: BuildBatch
) -> list[LogRecord]:
    """Apply each partition's fresh records once; return the records applied by this call."""
    progress = await store.persisted(source)
    applied: list[LogRecord] = []
    for partition, recs in sorted(by_partition(records).items()):
        while True:
            expected = progress.get(partition)
            fresh = [r for r in recs if r.offset >= (expected or 0)]
            if not fresh:
                break
            if await store.add_counts(build(source, partition, expected, fresh)):
                applied += fresh
                break
            progress = await store.persisted(source)  # another member moved it: look again
    return applied
