"""A batched lookup: alone it fetches at once; the keys asked while a fetch
runs go together in the next one; a failed fetch fails its own batch only."""

from __future__ import annotations

import asyncio

import pytest

from parley.storage.base import StoreUnavailable
from parley.storage.batched import BatchedLookup


class Fetches:
    def __init__(self, fail: set[str] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = fail or set()

    async def __call__(self, keys: list[str]) -> dict[str, str]:
        self.batches.append(keys)
        await self.release.wait()
        if self.fail & set(keys):
            raise StoreUnavailable("down")
        return {k: k.upper() for k in keys}


async def test_a_lone_key_is_fetched_at_once_by_itself() -> None:
    fetches = Fetches()
    lookup = BatchedLookup(fetches)
    assert await asyncio.wait_for(lookup.get("a"), 1) == "A"
    assert await asyncio.wait_for(lookup.get("b"), 1) == "B"
    assert fetches.batches == [["a"], ["b"]]


async def test_keys_asked_while_a_fetch_runs_go_in_the_next_one() -> None:
    fetches = Fetches()
    fetches.release.clear()
    lookup = BatchedLookup(fetches, max_batch=3)
    first = asyncio.create_task(lookup.get("a"))
    await asyncio.sleep(0.01)
    rest = [asyncio.create_task(lookup.get(k)) for k in ("b", "c", "b", "d", "e")]
    await asyncio.sleep(0.01)
    assert fetches.batches == [["a"]]
    fetches.release.set()
    assert await first == "A"
    assert [await t for t in rest] == ["B", "C", "B", "D", "E"]
    assert fetches.batches == [["a"], ["b", "c", "d"], ["e"]]


async def test_a_failed_fetch_fails_only_its_own_batch() -> None:
    fetches = Fetches(fail={"x"})
    fetches.release.clear()
    lookup = BatchedLookup(fetches)
    bad = asyncio.create_task(lookup.get("x"))
    await asyncio.sleep(0.01)
    good = asyncio.create_task(lookup.get("y"))
    fetches.release.set()
    with pytest.raises(StoreUnavailable):
        await bad
    assert await good == "Y"
    assert await lookup.get("z") == "Z"  # and the lookup goes on


async def test_a_caller_that_gives_up_leaves_the_others_their_answer() -> None:
    fetches = Fetches()
    fetches.release.clear()
    lookup = BatchedLookup(fetches)
    quitter = asyncio.create_task(lookup.get("a"))
    stayer = asyncio.create_task(lookup.get("a"))
    await asyncio.sleep(0.01)
    quitter.cancel()
    fetches.release.set()
    assert await stayer == "A"
    assert quitter.cancelled()


async def test_a_key_the_fetch_left_out_fails_alone() -> None:
    async def forgetful(keys: list[str]) -> dict[str, str]:
        return {k: k.upper() for k in keys if k != "lost"}

    lookup = BatchedLookup(forgetful)
    lost = asyncio.create_task(lookup.get("lost"))
    found = asyncio.create_task(lookup.get("found"))
    with pytest.raises(KeyError):
        await lost
    assert await found == "FOUND"
