"""Fixtures of the in-process tests (see tests/unit/inprocess.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.config import Settings
from parley.gateway.node import Node
from parley.log.embedded import EmbeddedLog
from parley.metrics import Metrics
from parley.storage.sqlite import SqliteStore


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes, "a" and "b", on one embedded log and one SQLite store."""
    log = EmbeddedLog(None)
    store = SqliteStore(str(tmp_path / "parley.db"))
    await store.start()
    await log.start()
    started: list[Node] = []
    try:
        for name in ("a", "b"):
            node = Node(Settings(node_id=name, data_dir=tmp_path), log, store, Metrics())
            await node.start()
            started.append(node)
        yield started[0], started[1]
    finally:
        for node in started:
            await node.stop()
        await log.stop()
        await store.stop()
