"""Real gateway nodes in one process, on one embedded log and one SQLite store.

For races between nodes that a test must set up exactly (an event that
lands late, a removal read after a re-add) rather than hope to hit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from parley.gateway.node import Node, new_session_id
from parley.gateway.session import Session
from parley.gateway.writer import SessionWriter
from parley.log.base import Delivered
from parley.log.records import Event
from tests.unit.fakes import FakeTransport

ProduceEvent = Callable[[Event], "asyncio.Future[Delivered] | None"]


class Opened:
    """A session on a node, and the close codes the node asked for."""

    def __init__(self, node: Node, user: str, device: str | None = None) -> None:
        self.node = node
        self.transport = FakeTransport()
        self.codes: list[int] = []
        writer = SessionWriter(self.transport, node.flusher, 1 << 20, lambda: None)
        self.session = Session(new_session_id(), user, device, writer, self._close)

    def _close(self, code: int, _reason: str) -> None:
        self.codes.append(code)
        self.node.session_closed(self.session)

    async def open(self) -> Opened:
        await self.node.open_session(self.session)
        if self.codes:  # closed while opening: its connection would end it now
            self.node.session_closed(self.session)
        await asyncio.sleep(0)  # the writer flushes on the next loop turn
        return self

    def frames(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.transport.frames() if f.get("type") == kind]

    def greeted(self) -> bool:
        return self.frames("hello") != []


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
