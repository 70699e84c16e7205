"""Variant B: aiohttp handshake/reader, data frames written raw to the transport.

Each broadcast message is encoded ONCE as an unmasked text frame
(0x81 + length + payload).  Every session queues frame bytes and writes them
with one ``transport.write(b"".join(queue))`` per event-loop turn; the flush is
scheduled with ``loop.call_soon``, either per session (``--flush session``,
the planned design) or once per loop turn for all dirty sessions
(``--flush hub``).  aiohttp still does the handshake, reads client frames and
writes its own control frames (pong, ping when heartbeat is on, close).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web
from common import (
    WS_PATH,
    add_server_args,
    encode_text_frame,
    keep_task,
    log_event,
    message_text,
    parse_control,
    run_with_loop,
)

log = logging.getLogger("parley.bench.raw")

#: A session whose transport buffer exceeds this is a slow consumer and is cut.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class RawSession:
    """One peer whose data frames bypass aiohttp's WebSocketWriter."""

    __slots__ = ("_queue", "_scheduled", "dropped_frames", "hub", "transport", "ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, hub: RawHub
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.hub = hub
        self._queue: list[bytes] = []
        self._scheduled = False
        self.dropped_frames = 0

    @property
    def writable(self) -> bool:
        # ws.closed turns True as soon as aiohttp starts its closing handshake
        # (before its close frame is written); after it no data frame may go out.
        return not self.ws.closed and not self.transport.is_closing()

    def enqueue(self, frame: bytes) -> None:
        """Queue one pre-encoded frame; it is written on the next loop turn."""
        if self.ws.closed:
            self.dropped_frames += 1
            return
        self._queue.append(frame)
        if not self._scheduled:
            self._scheduled = True
            self.hub.schedule(self)

    def flush(self) -> None:
        """Write all queued frames with one transport.write()."""
        self._scheduled = False
        queue = self._queue
        if not queue:
            return
        self._queue = []
        transport = self.transport
        if self.ws.closed or transport.is_closing():
            self.dropped_frames += len(queue)
            return
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            # Slow consumer: asyncio buffers without limit, and a ping queued
            # behind megabytes of data would time out anyway.  Cut it.
            self.dropped_frames += len(queue)
            log.warning("slow consumer, aborting %r", transport.get_extra_info("peername"))
            transport.abort()
            return
        transport.write(queue[0] if len(queue) == 1 else b"".join(queue))

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        """Close after the queued frames: flush first, then aiohttp's close frame."""
        self.flush()
        await self.ws.close(code=code, message=message)


class RawHub:
    """All sessions of one server plus the flush scheduling policy."""

    def __init__(self, flush_mode: str = "session", heartbeat: float | None = None) -> None:
        if flush_mode not in ("session", "hub"):
            raise ValueError(flush_mode)
        self.flush_mode = flush_mode
        self.heartbeat = heartbeat
        self.sessions: set[RawSession] = set()
        self._dirty: list[RawSession] = []
        self._hub_flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def schedule(self, session: RawSession) -> None:
        if self.flush_mode == "session":
            self.loop.call_soon(session.flush)
            return
        self._dirty.append(session)
        if not self._hub_flush_scheduled:
            self._hub_flush_scheduled = True
            self.loop.call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._hub_flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for session in dirty:
            try:
                session.flush()
            except Exception:  # one broken peer must not starve the others
                log.exception("flush failed")

    def publish(
        self, frame: bytes, targets: list[RawSession] | set[RawSession] | None = None
    ) -> None:
        for session in self.sessions if targets is None else targets:
            session.enqueue(frame)


TextHandler = Callable[[RawSession, str], Awaitable[None] | None]
EndHandler = Callable[[RawSession, web.Request], None]


def make_app(
    hub: RawHub,
    on_text: TextHandler | None = None,
    on_end: EndHandler | None = None,
    compress: bool = False,
) -> web.Application:
    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=compress, heartbeat=hub.heartbeat)
        await ws.prepare(request)
        # Only valid after prepare(): the 101 response is in the buffer before
        # any raw frame.  None if the peer vanished while prepare() drained.
        transport = request.transport
        if transport is None:
            return ws
        session = RawSession(ws, transport, hub)
        hub.sessions.add(session)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT and on_text is not None:
                    result = on_text(session, msg.data)
                    if inspect.isawaitable(result):
                        await result
        finally:
            hub.sessions.discard(session)
            if on_end is not None:
                on_end(session, request)
        return ws

    app = web.Application()
    app.router.add_get(WS_PATH, ws_handler)
    return app


async def serve(host: str, port: int, backlog: int, flush_mode: str) -> None:
    hub = RawHub(flush_mode)
    tasks: set[asyncio.Task[None]] = set()

    async def broadcast(sender: RawSession, messages: int, burst: int) -> None:
        targets = [s for s in hub.sessions if s is not sender]
        log_event(f"broadcast {messages} x {len(targets)} burst {burst} start")
        for seq in range(messages):
            hub.publish(encode_text_frame(message_text(seq).encode()), targets)
            if (seq + 1) % burst == 0:
                await asyncio.sleep(0)
        log_event("broadcast end")

    def on_text(session: RawSession, text: str) -> None:
        if cmd := parse_control(text):
            keep_task(tasks, broadcast(session, *cmd))

    runner = web.AppRunner(make_app(hub, on_text), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_args(parser)
    parser.add_argument("--flush", choices=("session", "hub"), default="session")
    args = parser.parse_args()
    run_with_loop(serve(args.host, args.port, args.backlog, args.flush), args.loop)


if __name__ == "__main__":
    main()
