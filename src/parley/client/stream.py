"""Where events go: a queue for `async for event in client`, and handlers run in a task.

Both are unbounded on purpose. A client that awaits `send` inside its event
loop waits for an ack that its own reader must read; a bounded queue would
stop that reader and deadlock the application against itself. The server
already bounds what it sends to one session, and the application consumes
what it subscribed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from parley.client.events import Event

logger = logging.getLogger("parley.client")

E = TypeVar("E", bound=Event)
Handler = Callable[[E], Awaitable[None] | None]


class EventStream:
    def __init__(self, *, buffer: bool) -> None:
        self._buffer = buffer
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._handlers: list[tuple[type[Any], Callable[[Any], Awaitable[None] | None]]] = []
        self._handler_queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None

    def emit(self, event: Event) -> None:
        if self._buffer:
            self._queue.put_nowait(event)
        if self._handlers:
            self._handler_queue.put_nowait(event)

    def end(self) -> None:
        """No more events: iterators finish after what is queued, and so do handlers."""
        self._queue.put_nowait(None)
        self._handler_queue.put_nowait(None)

    async def iterate(self) -> AsyncIterator[Event]:
        while (event := await self._queue.get()) is not None:
            yield event
        self._queue.put_nowait(None)  # let any other iterator end too

    def on(self, kind: type[E], handler: Handler[E]) -> Callable[[], None]:
        entry: tuple[type[Any], Callable[[Any], Awaitable[None] | None]] = (kind, handler)
        self._handlers.append(entry)
        self.start()
        return lambda: self._handlers.remove(entry) if entry in self._handlers else None

    def start(self) -> None:
        """Start running handlers (needs a running loop; `Client.connect` calls it too)."""
        if self._dispatcher is not None or not self._handlers:
            return
        with contextlib.suppress(RuntimeError):  # no running loop yet
            asyncio.get_running_loop()
            self._dispatcher = asyncio.create_task(self._dispatch(), name="parley-handlers")

    async def wait_handlers(self) -> None:
        """Wait for the handlers to finish what was emitted before `end()`."""
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher

    async def _dispatch(self) -> None:
        while (event := await self._handler_queue.get()) is not None:
            for kind, handler in list(self._handlers):
                if not isinstance(event, kind):
                    continue
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("event handler failed on %s", type(event).__name__)
