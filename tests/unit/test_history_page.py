"""A room whose whole history is small joins its window once read from the
store, so the next subscribe to it costs no query; and pages stay exact: no
gap, no duplicate, has_more right, whatever moved the window meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from parley.gateway import history
from parley.gateway.roomlog import RoomLog
from parley.protocol.messages import ChatMessage, message_id
from parley.storage.base import Store


def msg(seq: int) -> ChatMessage:
    return ChatMessage("club", message_id(0, seq), seq, "alice", f"m{seq}", 1_000 + seq, f"c{seq}")


class Stored:
    """The store's one call a page makes, over a list of seqs, counted."""

    def __init__(self, seqs: list[int], during: Callable[[], None] | None = None) -> None:
        self.messages = [msg(s) for s in seqs]
        self.asked = 0
        self.during = during  # what happens to the window while the query runs

    async def history(self, room_id: str, before: int | None, limit: int) -> list[ChatMessage]:
        self.asked += 1
        await asyncio.sleep(0)
        if self.during is not None:
            self.during()
        below = [m for m in self.messages if before is None or m.seq < before]
        return below[-limit:]


def window(seqs: list[int], coverage: int) -> RoomLog:
    state = RoomLog(coverage=coverage, name="club")
    state.window.extend(msg(s) for s in seqs)
    state.head = seqs[-1] if seqs else -1
    return state


def seqs(messages: list[ChatMessage]) -> list[int]:
    return [m.seq for m in messages]


async def page(
    store: Stored, state: RoomLog, before: int | None = None, limit: int = 5
) -> tuple[list[int], bool]:
    got, more = await history.page(cast(Store, store), state, "club", before, limit, keep=10)
    return seqs(got), more


async def test_an_empty_room_is_asked_once() -> None:
    store, state = Stored([]), window([], coverage=40)
    assert await page(store, state) == ([], False)
    assert await page(store, state) == ([], False)
    assert store.asked == 1
    assert state.coverage == 0


async def test_a_short_history_joins_the_window_and_the_next_page_is_from_memory() -> None:
    store, state = Stored([3, 7]), window([12, 15], coverage=10)
    assert await page(store, state) == ([3, 7, 12, 15], False)
    assert seqs(list(state.window)) == [3, 7, 12, 15]
    assert await page(store, state) == ([3, 7, 12, 15], False)
    assert store.asked == 1


async def test_a_long_history_stays_in_the_store_and_pages_stay_exact() -> None:
    store, state = Stored(list(range(10))), window([12, 15], coverage=10)
    assert await page(store, state) == ([7, 8, 9, 12, 15], True)
    assert state.coverage == 10
    assert seqs(list(state.window)) == [12, 15]
    assert await page(store, state) == ([7, 8, 9, 12, 15], True)
    assert store.asked == 2
    assert await page(store, state, before=7) == ([2, 3, 4, 5, 6], True)
    assert await page(store, state, before=2) == ([0, 1], False)


async def test_rows_that_would_overfill_the_window_are_not_kept() -> None:
    store, state = Stored(list(range(10))), window(list(range(20, 28)), coverage=20)
    assert await page(store, state) == ([23, 24, 25, 26, 27], True)
    store.asked = 0
    assert await page(store, state, before=22, limit=5) == ([7, 8, 9, 20, 21], True)
    assert state.coverage == 20  # 8 + 3 would pass keep=10
    assert await page(store, state, before=22, limit=5) == ([7, 8, 9, 20, 21], True)
    assert store.asked == 2


async def test_a_window_trimmed_during_the_query_is_left_as_it_is() -> None:
    state = window([12, 15], coverage=10)

    def trimmed() -> None:
        state.window.popleft()
        state.coverage = 13

    store = Stored([3, 7, 12], during=trimmed)
    assert await page(store, state) == ([3, 7, 12, 15], False)
    assert state.coverage == 13
    assert seqs(list(state.window)) == [15]


async def test_a_page_before_the_window_start_does_not_join_it() -> None:
    store, state = Stored([1, 2, 3, 4]), window([12, 15], coverage=10)
    assert await page(store, state, before=3) == ([1, 2], False)
    assert state.coverage == 10
    assert seqs(list(state.window)) == [12, 15]
