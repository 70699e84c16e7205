"""One embedded node for the client tests that need no Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with own_cluster("embedded", tmp_path, name="client") as cluster:
        yield cluster
