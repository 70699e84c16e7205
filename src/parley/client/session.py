"""What a client keeps across connections, and how each server frame changes it.

The room cursors (what was delivered, where to resume), the outbox (sends
without an ack), and read receipts made while disconnected outlive every
connection; `attach` hands them to a new one (rejoin every room with `since`,
resend every unacked message with its `client_id`, in order), and `on_frame`
applies what the server says. No method here awaits the network: writes are
queued on the link, and the two things that need a round trip of their own
(paging back after a capped replay, retrying a join) run as tasks of the
link, cancelled with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from parley.client.backoff import Backoff
from parley.client.errors import ClientError, Internal, RateLimited, ServerError, server_error
from parley.client.events import (
    Event,
    HistoryPage,
    Message,
    ServerErrorEvent,
    Subscribed,
    Subscription,
    Unsubscribed,
    parse_ack,
    parse_history,
    parse_message,
    parse_presence,
    parse_receipt,
    parse_typing,
)
from parley.client.link import Join, Link, LinkLost, Pending, Request
from parley.client.outbox import NOT_SENT, Outbox, PendingSend
from parley.client.rooms import RoomCursor

FILL_PAGE = 100  # messages per `history before=` page when walking back after a capped replay


class Session:
    def __init__(
        self,
        emit: Callable[[Event], None],
        backoff: Backoff,
        *,
        max_send_attempts: int,
        retry_rate_limited: bool,
    ) -> None:
        self._emit = emit
        self.backoff = backoff
        self.max_send_attempts = max_send_attempts
        self.retry_rate_limited = retry_rate_limited
        self.cursors: dict[str, RoomCursor] = {}
        self.outbox = Outbox()
        self.reads: dict[str, int] = {}  # read receipts made while disconnected
        self.link: Link | None = None  # the current connection, once attached

    @property
    def ready_link(self) -> Link | None:
        link = self.link
        return link if link is not None and link.ready else None

    def attach(self, link: Link) -> None:
        """A new connection: rejoin every room, resend every unacked message, in order."""
        self.link = link
        for cursor in list(self.cursors.values()):
            self.join(link, cursor)
        for pending in self.outbox.to_transmit(link.generation):
            pending.cancel_retry()
            self.transmit(link, pending)
        for room, seq in self.reads.items():
            link.write({"type": "read", "room": room, "seq": seq})
        self.reads.clear()
        link.ready = True

    async def detach(self, link: Link) -> None:
        """The connection ended: joins in flight start again on the next one."""
        if self.link is link:
            self.link = None
        for pending in await link.lost():
            if isinstance(pending, Join):
                pending.cursor.abort_join()

    def stop(self, reason: ClientError) -> None:
        """The client stopped: every call still waiting fails with `reason`."""
        self.link = None
        self.outbox.fail_all(reason)
        for cursor in self.cursors.values():
            if not cursor.ready.done():
                cursor.ready.set_exception(reason)

    # Calls ------------------------------------------------------------------------

    def subscribe(
        self, room: str, since: int | None, ready: asyncio.Future[Subscription]
    ) -> RoomCursor:
        cursor = self.cursors.get(room)
        if cursor is None:
            cursor = self.cursors[room] = RoomCursor(room, since, ready)
            if (link := self.ready_link) is not None:
                self.join(link, cursor)
        return cursor

    def unsubscribe(self, room: str) -> None:
        cursor = self.cursors.pop(room, None)
        if cursor is not None and not cursor.ready.done():
            cursor.ready.set_exception(ClientError(f"unsubscribed from {room} while joining"))

    def send(self, pending: PendingSend) -> PendingSend:
        """Queue a send (or find the same one queued); transmitted now if connected."""
        known = self.outbox.get(pending.room, pending.client_id)
        if known is not None:
            return known
        self.outbox.add(pending)
        if (link := self.ready_link) is not None:
            self.transmit(link, pending)
        return pending

    def read(self, room: str, seq: int) -> None:
        if (link := self.ready_link) is not None:
            link.write({"type": "read", "room": room, "seq": seq})
        else:
            self.reads[room] = max(seq, self.reads.get(room, -1))

    # Frames -------------------------------------------------------------------------

    def on_frame(self, link: Link, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        ref = obj.get("ref")
        pending = link.pending.get(ref) if isinstance(ref, str) else None
        if kind == "message":
            message = parse_message(obj)
            cursor = self.cursors.get(message.room)
            if cursor is not None:
                for m in cursor.offer(message):
                    self._emit(m)
        elif kind == "subscribed":
            if isinstance(pending, Join):
                head = obj.get("head")
                pending.head = head if isinstance(head, int) else None
        elif kind == "history" and pending is not None:
            del link.pending[str(ref)]
            if isinstance(pending, Join):
                self._joined(link, pending, parse_history(obj))
            elif isinstance(pending, Request) and not pending.future.done():
                pending.future.set_result(obj)
        elif kind == "ack":
            ack = parse_ack(obj)
            if isinstance(pending, PendingSend):
                del link.pending[str(ref)]
            pending = self.outbox.get(ack.room, ack.client_id)
            if pending is not None:
                self.outbox.resolve(pending, ack)
        elif kind == "error":
            error = server_error(str(obj.get("code")), str(obj.get("message", "")))
            if pending is None:
                self._emit(
                    ServerErrorEvent(
                        error.code, error.message, ref if isinstance(ref, str) else None
                    )
                )
            else:
                del link.pending[str(ref)]
                self._failed(link, pending, error)
        elif kind == "typing":
            self._emit(parse_typing(obj))
        elif kind == "receipt":
            self._emit(parse_receipt(obj))
        elif kind == "presence":
            self._emit(parse_presence(obj))
        elif kind in ("unsubscribed", "pong"):
            if isinstance(pending, Request):
                del link.pending[str(ref)]
                if not pending.future.done():
                    pending.future.set_result(obj)
            elif kind == "unsubscribed" and isinstance(room := obj.get("room"), str):
                # Pushed: the user was removed from the room.
                cursor = self.cursors.pop(room, None)
                if cursor is not None:
                    self._emit(Unsubscribed(room))

    def join(self, link: Link, cursor: RoomCursor) -> None:
        since = cursor.start_join()
        frame: dict[str, Any] = {"type": "subscribe", "room": cursor.room}
        if since is not None:
            frame["since"] = since
        link.call(Join(cursor, since), frame)

    def _joined(self, link: Link, join: Join, page: HistoryPage) -> None:
        if self.cursors.get(join.cursor.room) is not join.cursor:
            return  # unsubscribed meanwhile
        if join.since is not None and page.has_more and page.messages:
            # The server replayed only the newest part: walk back to `since`.
            link.spawn(self._fill(link, join, page))
        else:
            self._complete_join(join, page.messages, page.has_more)

    async def _fill(self, link: Link, join: Join, page: HistoryPage) -> None:
        cursor, since = join.cursor, join.since if join.since is not None else -1
        pages: list[tuple[Message, ...]] = [page.messages]
        before = page.messages[0].seq
        try:
            while True:
                frame = {
                    "type": "history",
                    "room": cursor.room,
                    "before": before,
                    "limit": FILL_PAGE,
                }
                older = parse_history(await link.request(frame, "history"))
                pages.append(tuple(m for m in older.messages if m.seq > since))
                if not older.has_more or not older.messages or older.messages[0].seq <= since:
                    break
                before = older.messages[0].seq
        except ServerError as exc:
            self._join_failed(link, join, exc)
            return
        except (LinkLost, asyncio.CancelledError):
            cursor.abort_join()
            raise
        if self.cursors.get(cursor.room) is cursor:
            self._complete_join(join, [m for chunk in reversed(pages) for m in chunk], True)

    def _complete_join(self, join: Join, messages: Iterable[Message], has_more: bool) -> None:
        cursor = join.cursor
        history: list[Message] = list(messages)
        delivered = cursor.finish_join(history)
        head = join.head if join.head is not None else history[-1].seq if history else -1
        self._emit(Subscribed(cursor.room, head, resumed=cursor.subscription is not None))
        for message in delivered:
            self._emit(message)
        if cursor.subscription is None:
            since = join.since
            if since is None:
                oldest = history[0].seq if history else None
            else:
                oldest = history[0].seq if history else since + 1
                has_more = since >= 0
            cursor.subscription = Subscription(cursor.room, head, oldest, has_more)
            if not cursor.ready.done():
                cursor.ready.set_result(cursor.subscription)

    def _failed(self, link: Link, pending: Pending, error: ServerError) -> None:
        if isinstance(pending, Request):
            if not pending.future.done():
                pending.future.set_exception(error)
        elif isinstance(pending, Join):
            self._join_failed(link, pending, error)
        else:
            self._send_failed(pending, error)

    def _join_failed(self, link: Link, join: Join, error: ServerError) -> None:
        cursor = join.cursor
        if self.cursors.get(cursor.room) is not cursor:
            return
        cursor.abort_join()
        if error.retriable:  # the server could not read the room: try again soon
            link.spawn(self._rejoin_later(link, cursor))
            return
        del self.cursors[cursor.room]
        if not cursor.ready.done():
            cursor.ready.set_exception(error)
        else:
            self._emit(Unsubscribed(cursor.room))

    async def _rejoin_later(self, link: Link, cursor: RoomCursor) -> None:
        await asyncio.sleep(self.backoff.delay(2))
        if link.alive and self.cursors.get(cursor.room) is cursor:
            self.join(link, cursor)

    def transmit(self, link: Link, pending: PendingSend) -> None:
        pending.link = link.generation
        frame = {
            "type": "send",
            "room": pending.room,
            "client_id": pending.client_id,
            "body": pending.body,
        }
        link.call(pending, frame)

    def _send_failed(self, pending: PendingSend, error: ServerError) -> None:
        pending.attempts += 1
        retry = isinstance(error, Internal) or (
            isinstance(error, RateLimited) and self.retry_rate_limited
        )
        if retry and pending.attempts < self.max_send_attempts and self.outbox.contains(pending):
            pending.link = NOT_SENT  # the next connection resends it if the timer has not
            delay = self.backoff.delay(pending.attempts - 1)
            loop = asyncio.get_running_loop()
            pending.retry = loop.call_later(delay, self._retry_send, pending)
            return
        self.outbox.fail(pending, error)

    def _retry_send(self, pending: PendingSend) -> None:
        pending.retry = None
        link = self.link
        if link is not None and link.ready and self.outbox.contains(pending):
            if pending.link != link.generation:
                self.transmit(link, pending)
