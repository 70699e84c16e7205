"""Drives one WebSocket through the protocol: frames in, node calls, frames out.

Frames are handled one after another, in the order the client sent them, so
the sends of one connection reach the producer, and so their room's
partition, in that order (PROTOCOL: pipelined sends keep their order). Nothing
in this loop waits for Kafka: a `send` returns as soon as it is produced.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from parley.gateway.node import AckWaiter, Node, NotMember, new_session_id
from parley.gateway.session import Session
from parley.gateway.writer import PING_FRAME, SessionWriter, pong_frame
from parley.log.base import LogUnavailable
from parley.protocol.codes import CloseCode, ErrorCode
from parley.protocol.errors import FrameError
from parley.protocol.frames import (
    History,
    Ping,
    Read,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
    parse_client_frame,
)
from parley.protocol.messages import (
    Ack,
    ack_frame,
    encode,
    error_frame,
    history_frame,
    with_ref,
)
from parley.storage.base import StoreUnavailable

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
ERROR_BUDGET = 50  # client errors within ERROR_WINDOW_S before the connection is closed (1008)
# Errors that are the client's fault count against the budget; rate limiting
# and server trouble do not (a bot pipelining past its burst is not abusive).
_BUDGETED = frozenset(
    {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.TOO_LARGE, ErrorCode.NOT_MEMBER}
)
ERROR_WINDOW_S = 10.0
# A connection whose sends are refused (`rate_limited`) at least FLOOD_PER_S
# times a second for FLOOD_SECONDS seconds in a row is flooding: 1008. A burst,
# however large (a client pipelining its backlog after a reconnect), is only
# answered; what is closed is a client that never backs off.
FLOOD_PER_S = 50
FLOOD_SECONDS = 10


class Connection:
    __slots__ = (
        "_close_task",
        "_close_wanted",
        "_errors",
        "_flood_seconds",
        "_reading",
        "_refused_in_second",
        "_refused_second",
        "_transport",
        "address",
        "heard",
        "liveness_bucket",
        "node",
        "pinged",
        "session",
        "ws",
    )

    def __init__(
        self,
        node: Node,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        user: str,
        device: str | None,
        address: str,
    ) -> None:
        self.node = node
        self.address = address
        self.ws = ws
        self._transport = transport
        self._close_wanted: tuple[int, str] | None = None  # (code, reason) of the close
        self._close_task: asyncio.Task[None] | None = None  # a close run beside the loop
        self._reading: asyncio.Task[None] | None = None  # the loop's task while it awaits a frame
        writer = SessionWriter(
            transport, node.flusher, node.settings.session_queue_bytes, self._on_overflow
        )
        self.session = Session(new_session_id(), user, device, writer, self.request_close)
        self._errors: list[float] | None = None  # made at the first error
        self._refused_second = 0  # the whole monotonic second of the last refusal
        self._refused_in_second = 0  # refusals within it
        self._flood_seconds = 0  # flooding seconds in a row before it
        self.heard = True  # a frame read since the liveness sweep last looked
        self.pinged = False
        self.liveness_bucket = 0

    # Closing ------------------------------------------------------------------

    def _on_overflow(self) -> None:
        logger.info(
            "closing session %s of %s: outbound queue full", self.session.id, self.session.user
        )
        self.session.closing = True
        self._start_close(
            CloseCode.POLICY, "too slow: outbound queue full; resume with since", flush=False
        )

    def request_close(self, code: int, reason: str) -> None:
        self._start_close(code, reason, flush=True)

    def _start_close(self, code: int, reason: str, *, flush: bool) -> None:
        """Close now, with no `receive()` pending while aiohttp's `close()` runs.

        With one pending, aiohttp closes the socket right after its close frame
        without reading the client's reply; frames the client sent meanwhile
        then make the kernel answer with a reset, and a client that writes
        again before reading sees 1006, not our code. So a loop waiting for a
        frame is woken and closes itself (run()'s finally); one busy with a
        frame (a store query can take seconds) is closed beside it, and stops
        at its next frame.
        """
        if self._close_wanted is not None:
            return
        if flush:
            self.session.writer.close()
        self._close_wanted = (code, reason)
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None
        else:
            self._close_task = asyncio.create_task(self._close())

    async def _finish_close(self) -> None:
        """The close asked for, if any, done before the handler returns."""
        if self._close_task is not None:
            await self._close_task
        else:
            await self._close()

    async def _close(self) -> None:
        """The close handshake: our close frame, then the client's (read until it comes)."""
        if self._close_wanted is None:
            return  # the client closed, and aiohttp answered it
        code, reason = self._close_wanted
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 5)
        except Exception:
            # The peer did not answer the close in time (it stopped reading):
            # drop the connection rather than keep its buffers.
            logger.info(
                "session %s of %s: no answer to close %d within 5 s; connection dropped",
                self.session.id,
                self.session.user,
                code,
            )
            self._transport.abort()

    # Errors -------------------------------------------------------------------

    def error(self, code: ErrorCode, message: str, ref: str | None) -> None:
        self.session.writer.send_json(error_frame(code, message, ref))
        if code not in _BUDGETED:
            return
        now = time.monotonic()
        self._errors = [t for t in self._errors or () if now - t < ERROR_WINDOW_S]
        self._errors.append(now)
        if len(self._errors) > ERROR_BUDGET:
            self.request_close(CloseCode.POLICY, "too many errors")

    def refuse(self, message: str, ref: str | None) -> None:
        """`rate_limited`; a client that keeps sending through it is flooding (1008)."""
        self.session.writer.send_json(error_frame(ErrorCode.RATE_LIMITED, message, ref))
        second = int(time.monotonic())
        if second != self._refused_second:
            flooded = self._refused_in_second >= FLOOD_PER_S
            in_a_row = flooded and second == self._refused_second + 1
            self._flood_seconds = self._flood_seconds + 1 if in_a_row else 0
            self._refused_second, self._refused_in_second = second, 0
        self._refused_in_second += 1
        if self._flood_seconds >= FLOOD_SECONDS - 1 and self._refused_in_second == FLOOD_PER_S:
            self.request_close(CloseCode.POLICY, "flooding: sends ignored rate_limited")

    # The loop -----------------------------------------------------------------

    async def run(self, room: str | None, since: int | None) -> None:
        node = self.node
        try:
            await node.open_session(self.session)
        except StoreUnavailable:
            self.session.writer.send_json(error_frame(ErrorCode.INTERNAL, "database unavailable"))
            self.request_close(1011, "database unavailable")
            await self._finish_close()
            return
        if node.draining:
            # Opened while the node began to drain, after its sessions were told
            # to go: this one goes the same way (1001), not dropped at exit.
            self.request_close(CloseCode.GOING_AWAY, "server going away")
        node.liveness.add(self)
        try:
            if room is not None and self._close_wanted is None:
                await self._dispatch(Subscribe(room, since, None))
            await self._read_frames()
        finally:
            node.liveness.remove(self)
            self.session.writer.close()  # nothing may follow the close frame
            node.session_closed(self.session)
            await self._finish_close()

    # Liveness (gateway/liveness.py) -------------------------------------------

    def heard_since_look(self) -> bool:
        # A loop not waiting for a frame is handling one (a store query can
        # take seconds): the client spoke, and its pong may be queued behind.
        heard = self.heard or self._reading is None
        self.heard = False
        return heard

    def ping(self) -> None:
        self.session.writer.send_frame(PING_FRAME)

    def drop_dead(self) -> None:
        """No frame, not even a pong, since the last ping: the peer is gone."""
        logger.info(
            "session %s of %s: no answer to a ping; connection dropped",
            self.session.id,
            self.session.user,
        )
        self._transport.abort()

    async def _read_frames(self) -> None:
        """Frames in order until the client closes or a close is asked for."""
        ws = self.ws
        task = asyncio.current_task()
        while self._close_wanted is None:
            self._reading = task
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                # Ours (see _start_close) unless the task was cancelled again.
                if self._close_wanted is None or task is None or task.uncancel() > 0:
                    raise
                return
            finally:
                self._reading = None
            self.heard = True
            if msg.type == WSMsgType.TEXT:
                try:
                    frame = parse_client_frame(msg.data)
                except FrameError as exc:
                    self.error(exc.code, exc.message, exc.ref)
                    continue
                await self._dispatch(frame)
            elif msg.type == WSMsgType.BINARY:
                self.error(ErrorCode.BAD_REQUEST, "binary frames are not accepted", None)
            elif msg.type == WSMsgType.PING:
                self.session.writer.send_frame(pong_frame(msg.data))
            elif msg.type == WSMsgType.PONG:
                pass  # an answer to our ping: heard, which is all it says
            else:
                return  # CLOSE (aiohttp has answered it), CLOSING, CLOSED or ERROR

    async def _dispatch(self, frame: object) -> None:
        node = self.node
        session = self.session
        user = session.user
        ref = getattr(frame, "ref", None)
        try:
            if isinstance(frame, Send):
                member = node.membership.cached(frame.room, user)
                if member is None:
                    member = await node.membership.is_member(frame.room, user)
                if not member:
                    raise NotMember(frame.room)
                if not node.addresses.allow_message(self.address):
                    self.refuse("too many messages from this address", ref)
                    return
                if not node.send_limiter.allow(user):
                    self.refuse("sending too fast", ref)
                    return
                if node.draining:
                    # New sends would keep the pending set from ever emptying: the
                    # client retries this one (same client_id) on another node.
                    self.error(ErrorCode.INTERNAL, "server going away; retry elsewhere", ref)
                    return
                writer = session.writer

                def on_ack(msg: Ack, ref: str | None = ref) -> None:
                    writer.send_json(ack_frame(msg, ref))

                def on_error(code: ErrorCode, message: str, ref: str | None = ref) -> None:
                    writer.send_json(error_frame(code, message, ref))

                node.send(
                    user, frame.room, frame.client_id, frame.body, AckWaiter(on_ack, on_error)
                )
            elif isinstance(frame, Subscribe):
                await node.subscribe(session, frame.room, frame.since, ref)
            elif isinstance(frame, History):
                await node.check_member(frame.room, user)
                messages, has_more = await node.page(frame.room, frame.before, frame.limit)
                session.writer.send_json(history_frame(frame.room, messages, has_more, ref))
            elif isinstance(frame, Unsubscribe):
                node.unsubscribe(session, frame.room)
                session.writer.send_json(
                    encode(with_ref({"type": "unsubscribed", "room": frame.room}, ref))
                )
            elif isinstance(frame, Typing):
                await node.check_member(frame.room, user)
                if not node.typing(user, frame.room):
                    self.error(ErrorCode.INTERNAL, "the log is unavailable", ref)
            elif isinstance(frame, Read):
                await node.check_member(frame.room, user)
                if not await node.read(user, frame.room, frame.seq):
                    self.error(ErrorCode.INTERNAL, "the log is unavailable", ref)
            elif isinstance(frame, Ping):
                session.writer.send_json(encode(with_ref({"type": "pong"}, ref)))
        except NotMember:
            self.error(ErrorCode.NOT_MEMBER, "not a member of this room, or no such room", ref)
        except (StoreUnavailable, LogUnavailable):
            self.error(ErrorCode.INTERNAL, "the database or the log is unavailable; retry", ref)
        except Exception:
            # No frame may end the connection: answer it and keep going.
            logger.exception("frame from %s failed", user)
            self.error(ErrorCode.INTERNAL, "internal error", ref)
