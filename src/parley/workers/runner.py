"""consume → handle → commit, the loop every worker runs.

Offsets are committed only after the handler returned, so a worker killed at
any point re-reads from its last commit; handlers are idempotent, so the
re-read changes nothing (at-least-once delivery, exactly-once effect). A
handler that fails with a retriable error is retried with backoff on the same
batch, and nothing is committed meanwhile: no record is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from parley.log.base import GroupConsumer, LogRecord

logger = logging.getLogger(__name__)

BatchWork = Callable[[list[LogRecord]], Awaitable[None]]


def next_offsets(records: list[LogRecord]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        if r.offset + 1 > out.get(r.partition, -1):
            out[r.partition] = r.offset + 1
    return out


async def run_worker(
    name: str,
    consumer: GroupConsumer,
    handle: BatchWork,
    stop: asyncio.Event,
    *,
    max_batch: int = 5000,
    linger_s: float = 0.0,
    retriable: tuple[type[BaseException], ...] = (),
) -> None:
    """Run until `stop`. With `linger_s`, a batch keeps filling for that long
    after its first record (up to `max_batch`): how a burst becomes one batch."""
    await consumer.start()
    ahead: asyncio.Future[list[LogRecord]] | None = None
    try:
        while not stop.is_set():
            if ahead is not None:
                records, ahead = await ahead, None
            else:
                records = await consumer.poll(max_batch, 0.2)
            if not records:
                continue
            if linger_s > 0:
                records += await _linger(consumer, max_batch - len(records), linger_s, stop)
            else:
                # Read the next batch while this one is handled (the consumer
                # works in its own thread): the database and the broker overlap.
                ahead = asyncio.ensure_future(consumer.poll(max_batch, 0.2))
            if not await _handle_batch(name, handle, records, stop, retriable):
                return  # stopping: not committed, the next run re-reads this batch
            await consumer.commit(next_offsets(records))
    finally:
        if ahead is not None:
            # Read but not handled: not committed either, so read again next run.
            with contextlib.suppress(Exception):
                await ahead
        await consumer.stop()


async def _linger(
    consumer: GroupConsumer, room: int, linger_s: float, stop: asyncio.Event
) -> list[LogRecord]:
    more: list[LogRecord] = []
    deadline = asyncio.get_running_loop().time() + linger_s
    while len(more) < room and not stop.is_set():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            break
        more += await consumer.poll(room - len(more), min(left, 0.2))
    return more


def by_partition(records: list[LogRecord]) -> dict[int, list[LogRecord]]:
    out: dict[int, list[LogRecord]] = {}
    for r in records:
        out.setdefault(r.partition, []).append(r)
    return out


async def _handle_batch(
    name: str,
    handle: BatchWork,
    records: list[LogRecord],
    stop: asyncio.Event,
    retriable: tuple[type[BaseException], ...],
) -> bool:
    """Handle a batch; False if stopped first. Retries what may succeed later.

    A batch that fails for good is split: each record is tried alone, and
    the ones that still fail are logged and skipped, so one poison record
    cannot stop the worker or take its neighbours with it.
    """
    delay = 0.1
    while True:
        try:
            await handle(records)
            return True
        except retriable as exc:
            if stop.is_set():
                return False
            logger.warning("%s: %s; retrying in %.1f s", name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        except Exception:
            if len(records) == 1:
                r = records[0]
                logger.exception("%s: skipping record %s/%s", name, r.partition, r.offset)
                return True
            for record in records:
                if not await _handle_batch(name, handle, [record], stop, retriable):
                    return False
            return True


async def supervise(name: str, run: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run a worker until `stop`; restart it, with backoff, if it crashes."""
    delay = 1.0
    while not stop.is_set():
        try:
            await run()
            return
        except Exception:
            logger.exception("worker %s crashed; restarting in %.0f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
