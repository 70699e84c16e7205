"""A rate-limited send is retried with its client_id, so it lands once; or raised when asked."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.client import Backoff, RateLimited
from tests.client.support import connected
from tests.conftest import own_cluster
from tests.harness import Cluster


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with own_cluster(
        "embedded", tmp_path, name="strict", PARLEY_RATE_LIMIT="10", PARLEY_RATE_BURST="5"
    ) as cluster:
        yield cluster


async def test_rate_limited_sends_are_retried_until_acked(strict: Cluster) -> None:
    await strict.api("alice").create_room("slow", [])
    retry = Backoff(initial=0.2, maximum=1.0)
    async with connected(strict.nodes[0].url, "alice", backoff=retry, max_send_attempts=50) as (
        alice,
        _,
    ):
        acks = await asyncio.wait_for(
            asyncio.gather(*(alice.send("slow", f"m{i}", client_id=f"c{i}") for i in range(20))),
            60,
        )
        assert len({a.seq for a in acks}) == 20
        page = await alice.history("slow", limit=100)
        assert collections.Counter(m.client_id for m in page.messages) == {
            f"c{i}": 1 for i in range(20)
        }


async def test_rate_limited_raises_when_retries_are_off(strict: Cluster) -> None:
    await strict.api("alice").create_room("strict", [])
    async with connected(strict.nodes[0].url, "alice", retry_rate_limited=False) as (alice, _):
        results = await asyncio.gather(
            *(alice.send("strict", f"m{i}") for i in range(20)), return_exceptions=True
        )
        limited = [r for r in results if isinstance(r, RateLimited)]
        assert limited and all(r.retriable for r in limited)
        assert len(limited) < 20
        assert alice.unacked == 0
