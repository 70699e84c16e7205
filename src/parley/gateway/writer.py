"""Per-session outbound queues, written with one `write()` per socket per loop turn.

Server-to-client WebSocket frames are never masked, so a frame's bytes are the
same for every recipient: the hub encodes a message's frame once and every
session queues the same `bytes` object. Each loop turn, the Flusher joins each
dirty session's queue and writes it in one call, which is where Python and
the kernel spend per call (DESIGN-NOTES: 4 to 16 frames per write reach 0.5 to 2 M
frames/s on one core, against ≈4.7 µs per single-frame write).

The queue is bounded in bytes, counting what the transport still holds: a
client that stops reading overflows it and is closed with 1008 (it resumes
with `since`), so it never makes the fan-out wait or memory grow.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import struct
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


# A server's ping: unmasked, final, no payload. Pings and pongs go through the
# session's queue like any frame, so they never cut into one.
PING_FRAME = b"\x89\x00"


def pong_frame(payload: bytes) -> bytes:
    """The answer to a client's ping (RFC 6455 §5.5.3: its payload, at most 125 bytes)."""
    return bytes((0x8A, len(payload))) + payload


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def get_write_buffer_size(self) -> int: ...


class _CollectorHold:
    """The collector is one per process; the flushers holding it are counted.

    Several nodes may share a process (tests do): the collector comes back on
    when the last hold ends, and only if a hold turned it off.
    """

    holders = 0
    turned_off = False

    @classmethod
    def take(cls) -> None:
        if cls.holders == 0 and gc.isenabled():
            gc.disable()
            cls.turned_off = True
        cls.holders += 1

    @classmethod
    def give_back(cls) -> None:
        cls.holders -= 1
        if cls.holders == 0 and cls.turned_off:
            cls.turned_off = False
            gc.enable()


class Flusher:
    """Flushes every session written to in this loop turn, in one callback."""

    def __init__(self) -> None:
        self._dirty: list[SessionWriter] = []
        self._scheduled = False
        self._collector_held = False

    def mark(self, writer: SessionWriter) -> None:
        self._dirty.append(writer)
        if not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        asyncio.get_running_loop().call_soon(self._flush)  # raises first if no loop runs
        self._scheduled = True

    def hold_collector(self) -> None:
        """Keep CPython's cyclic collector off until this turn's frames are written.

        A collection starts at whichever allocation crosses its threshold, and
        in a fan-out that is one of the message's own: a young collection took
        4-5 ms there and a middle one 17 ms, between the first recipient's
        frame and the last's (bench/analysis.md, big room). Held, it runs at
        the first allocation after the flush instead: the same work, after the
        frames went out. The flush is scheduled before anything else, so that
        the hold always ends, even if nothing gets queued.
        """
        if self._collector_held:
            return
        if not self._scheduled:
            self._schedule()
        _CollectorHold.take()
        self._collector_held = True

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        try:
            for writer in dirty:
                try:
                    writer.flush()
                except Exception:  # one lost socket must not stop the others' flush
                    logger.exception("flushing a session failed")
                    writer.abandon()
        finally:
            if self._collector_held:
                self._collector_held = False
                _CollectorHold.give_back()


class SessionWriter:
    __slots__ = ("_closed", "_flusher", "_on_overflow", "_queue", "_queued", "_transport", "limit")

    def __init__(
        self,
        transport: Transport,
        flusher: Flusher,
        limit_bytes: int,
        on_overflow: Callable[[], None],
    ) -> None:
        self._transport = transport
        self._flusher = flusher
        self._queue: list[bytes] = []
        self._queued = 0
        self._closed = False
        self._on_overflow = on_overflow
        self.limit = limit_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def send_json(self, payload: bytes) -> None:
        self.send_frame(text_frame(payload))

    def send_frame(self, frame: bytes) -> None:
        if self._closed:
            return
        if not self._queue:
            self._flusher.mark(self)
        self._queue.append(frame)
        self._queued += len(frame)
        self._cut_off_past_limit(self._queued)

    def _cut_off_past_limit(self, pending: int) -> bool:
        """Close for overflow, dropping what is queued, if `pending` bytes and
        what the transport still holds pass the limit; whether it did."""
        if pending + self._transport.get_write_buffer_size() <= self.limit:
            return False
        self._closed = True
        self._queue.clear()
        self._queued = 0
        self._on_overflow()
        return True

    def send_now(self, data: bytes) -> None:
        """Write at once when nothing is queued; else queue behind what is.

        The fan-out's path (`Hub.deliver_batch`): one pass over a room writes
        every socket, and the order holds, as whatever was queued first goes
        out first. A write that fails loses this session only.
        """
        if self._queue or self._closed:
            self.send_frame(data)
            return
        transport = self._transport
        if transport.is_closing():
            return
        if self._cut_off_past_limit(len(data)):
            return  # as `send_frame`: what would pass the limit is not written
        try:
            transport.write(data)
        except Exception:
            logger.exception("writing to a session failed")
            self.abandon()

    def flush(self) -> None:
        if not self._queue:
            return
        data = self._queue[0] if len(self._queue) == 1 else b"".join(self._queue)
        self._queue.clear()
        self._queued = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def abandon(self) -> None:
        """Drop what is queued and stop queueing: the socket is gone."""
        self._queue.clear()
        self._queued = 0
        self._closed = True

    def close(self) -> None:
        """Stop queueing; what is queued is flushed first, so nothing sent is cut."""
        self.flush()
        self._closed = True
