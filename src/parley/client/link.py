"""One WebSocket connection: ordered writes, and the calls waiting for a reply by `ref`.

The client replaces its link after every reconnect. Writes are synchronous
for the caller (queued, then written in order by one task), so the state
machine in `client.py` never awaits in the middle of a decision, and frames
keep the order they were decided in: pipelined sends reach the server in the
order `Client.send` was called.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from parley.client.outbox import PendingSend
from parley.client.rooms import RoomCursor


class LinkLost(Exception):
    """The connection a call was made on is gone; the caller may make it again."""


@dataclass(eq=False, slots=True)
class Join:
    """A `subscribe` in flight: answered by `subscribed` then `history` (or an `error`)."""

    cursor: RoomCursor
    since: int | None
    head: int | None = None


@dataclass(eq=False, slots=True)
class Request:
    """A frame whose reply (`history`, `unsubscribed`, `pong`) resolves `future`."""

    reply: str
    future: asyncio.Future[dict[str, Any]] = field(repr=False)


Pending = Join | Request | PendingSend


class Link:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, generation: int) -> None:
        self.ws = ws
        self.generation = generation
        self.pending: dict[str, Pending] = {}
        # True once every subscription and unacked send of the client was
        # written again: later calls write directly.
        self.ready = False
        self.alive = True
        self.tasks: set[asyncio.Task[None]] = set()
        self._refs = itertools.count(1)
        self._queue: deque[str] = deque()
        self._wake = asyncio.Event()

    def new_ref(self) -> str:
        return f"r{next(self._refs)}"

    def write(self, frame: dict[str, Any]) -> None:
        if self.alive:
            self._queue.append(orjson.dumps(frame).decode())
            self._wake.set()

    def call(self, pending: Pending, frame: dict[str, Any]) -> str:
        """Write a frame with a fresh `ref` whose reply (or error) goes to `pending`."""
        ref = self.new_ref()
        self.pending[ref] = pending
        self.write({**frame, "ref": ref})
        return ref

    def request(self, frame: dict[str, Any], reply: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if not self.alive:
            future.set_exception(LinkLost())
        else:
            self.call(Request(reply, future), frame)
        return future

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a task that belongs to this connection (cancelled when it ends)."""
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def write_loop(self) -> None:
        """Write queued frames in order until the connection fails or closes."""
        while True:
            while self._queue:
                await self.ws.send_str(self._queue.popleft())
            self._wake.clear()
            await self._wake.wait()

    async def lost(self) -> list[Pending]:
        """The connection ended: stop its tasks, fail its requests, hand back the rest."""
        self.alive = False
        self.ready = False
        self._queue.clear()
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, LinkLost):
                await task
        rest: list[Pending] = []
        for pending in self.pending.values():
            if isinstance(pending, Request):
                if not pending.future.done():
                    pending.future.set_exception(LinkLost())
            else:
                rest.append(pending)
        self.pending.clear()
        return rest
