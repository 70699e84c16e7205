"""The Kafka tail's hand-over to the loop: batches fetched while the loop is busy join.

No broker is needed: the reader thread's side (`_hand_over`) is driven from a
plain thread, as the consumer thread would, while the loop is held busy.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from parley.log import kafka
from parley.log.base import LogRecord


def records(first: int, n: int) -> list[LogRecord]:
    return [LogRecord("t", 0, o, None, b"v%d" % o, 0) for o in range(first, first + n)]


class Batches:
    def __init__(self) -> None:
        self.got: list[list[int]] = []

    def __call__(self, batch: list[LogRecord]) -> None:
        self.got.append([r.offset for r in batch])


def tail(handler: Batches) -> kafka._KafkaTail:
    reader = kafka._KafkaTail({}, "t", None, handler)
    reader._loop = asyncio.get_running_loop()
    reader._running = True
    return reader


async def test_batches_fetched_while_the_loop_is_busy_reach_it_as_one() -> None:
    handler = Batches()
    reader = tail(handler)
    # The loop is busy (this coroutine does not yield) while three batches come.

    def read() -> None:
        for i in range(3):
            reader._hand_over(records(i * 10, 10))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join()
    assert handler.got == []
    await asyncio.sleep(0.01)
    assert handler.got == [list(range(30))]  # one batch, in order
    # An idle loop takes each batch as it comes.
    reader._hand_over(records(30, 2))
    await asyncio.sleep(0.01)
    reader._hand_over(records(32, 2))
    await asyncio.sleep(0.01)
    assert handler.got[1:] == [[30, 31], [32, 33]]


async def test_the_reader_waits_while_too_much_waits_for_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka, "MAX_WAITING", 20)
    handler = Batches()
    reader = tail(handler)
    done = threading.Event()

    def read() -> None:
        for i in range(3):
            reader._hand_over(records(i * 10, 10))
        done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        # The loop is held (a blocking wait, on purpose): the third batch must wait.
        assert not done.wait(0.3)
        await asyncio.sleep(0.05)  # the loop takes the first 20; the third goes in
        thread.join(2)
        assert done.is_set()
    finally:
        reader._running = False  # a failed check must not leave the thread waiting
    await asyncio.sleep(0.01)
    assert handler.got == [list(range(20)), list(range(20, 30))]


async def test_a_stopped_reader_hands_nothing_over() -> None:
    handler = Batches()
    reader = tail(handler)
    reader._running = False
    reader._hand_over(records(0, 5))
    await asyncio.sleep(0.01)
    assert handler.got == []


def test_a_closed_loop_stops_the_reader() -> None:
    handler = Batches()
    loop = asyncio.new_event_loop()
    loop.close()
    reader = kafka._KafkaTail({}, "t", None, handler)
    reader._loop = loop
    reader._running = True
    reader._hand_over(records(0, 5))  # nobody can take it: dropped, and the reader stops
    assert reader._waiting is None
    assert reader._running is False
