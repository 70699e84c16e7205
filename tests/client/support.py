"""Helpers for the client tests: an event recorder, a cuttable TCP proxy, clients on a node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from parley.client import Backoff, Client, Event, Message
from tests.harness import ServerProcess, free_port, token

T = TypeVar("T")
FAST = Backoff(initial=0.05, maximum=0.5)


class Recorder:
    """Keeps every event a client yields, and lets a test wait for a condition on them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for event in self.client:
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    def messages(self, room: str) -> list[Message]:
        return [e for e in self.of(Message) if e.room == room]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self._task.done():
                    raise AssertionError(f"the event stream ended: {self.events[-5:]}")
                self._changed.clear()
                await self._changed.wait()

    async def wait_messages(self, room: str, count: int, timeout: float = 30.0) -> list[Message]:
        try:
            await self.wait_for(lambda: len(self.messages(room)) >= count, timeout)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.messages(room))} of {count} messages in {room}"
            ) from None
        return self.messages(room)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def connected(url: str, user: str, **options: Any) -> AsyncIterator[tuple[Client, Recorder]]:
    """A connected client (fast backoff unless given) and the recorder of its events."""
    options.setdefault("backoff", FAST)
    tok = options.pop("token", None) or token(user)
    client = Client(url, tok, **options)
    recorder = Recorder(client)
    try:
        await asyncio.wait_for(client.connect(), 30)
        yield client, recorder
    finally:
        await client.close()
        await recorder.stop()


def node_url(server: ServerProcess) -> str:
    return server.url


class Proxy:
    """A TCP proxy to a node that a test can cut (an abrupt drop) and restore.

    While cut, it refuses new connections, so the client stays away for as
    long as the test wants: the deterministic way to make it miss messages.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def cut(self) -> None:
        """Stop listening and drop every connection at once (no close handshake)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            transport = w.transport
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self._writers.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        self._pipes.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
