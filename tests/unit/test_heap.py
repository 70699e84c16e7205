"""The gateway's collector settings (parley/cli/heap.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from parley.cli import heap


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_settle_freezes_the_start_up_heap_and_spaces_collections() -> None:
    kept = [[i] for i in range(1000)]  # containers: tracked by the collector
    before = gc.get_freeze_count()
    heap.settle()
    assert gc.get_freeze_count() >= before + len(kept), "what lives now is out of its reach"
    young, _, full = gc.get_threshold()
    assert (young, full) == (heap.YOUNG_AFTER, heap.FULL_AFTER)
