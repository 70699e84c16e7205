"""`Client`: one user's connection to Parley, kept alive and consistent across drops.

Example, a bot that answers `!ping` in every room it is in::

    import asyncio
    from parley.client import Client, Message

    async def main() -> None:
        async with Client("http://127.0.0.1:8000", token) as client:
            for room in client.rooms:
                await client.subscribe(room)
            async for event in client:
                if isinstance(event, Message) and event.body == "!ping":
                    await client.send(event.room, "pong")

    asyncio.run(main())

What it guarantees, whatever happens to the connection:

- every message of a subscribed room reaches the application once, in seq
  order, from the point of subscription on: after a drop the client
  reconnects (jittered exponential backoff), resubscribes with `since` = the
  last seq it delivered, pages back with `history before=` when the server
  replayed only the newest part, and drops what it delivered already;
- every `send` is acked exactly once: unacked sends are written again after a
  reconnect with their original `client_id`, which the server answers with
  the original ack instead of making a second message;
- it stops only when told to (`close()`), when the token is refused for good,
  or on close 4409 (another connection of the same `device` took over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

import aiohttp

from parley.client.backoff import Backoff
from parley.client.endpoints import Endpoints
from parley.client.errors import (
    BadRequest,
    ClientClosed,
    ClientError,
    ConnectionReplaced,
    ProtocolViolation,
    TooLarge,
    Unauthorized,
)
from parley.client.events import (
    Ack,
    Connected,
    ConnectionState,
    Event,
    HistoryPage,
    Replaced,
    StateChanged,
    Subscription,
    parse_history,
)
from parley.client.handshake import (
    CLOSE_REPLACED,
    CLOSE_UNAUTHORIZED,
    CLOSED_TYPES,
    Refused,
    Retry,
    decode,
    open_connection,
)
from parley.client.link import Link, LinkLost
from parley.client.outbox import PendingSend
from parley.client.rest import RestClient
from parley.client.session import Session
from parley.client.stream import E, EventStream, Handler
from parley.client.tokens import TokenProvider, TokenSource

logger = logging.getLogger("parley.client")


MAX_BODY_CHARS = 4096
MAX_TOKEN_REFUSALS = 3  # fresh tokens refused in a row before giving up
STABLE_S = 10.0  # a connection that lived this long resets the backoff


def _swallow(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: its caller may have stopped waiting."""
    if not future.cancelled():
        future.exception()


class Client:
    """An asyncio Parley client. Use it as `async with Client(url, token) as c:`.

    `token` is a JWT, or a provider (a function, plain or async, returning
    one) that is called again whenever the token expires or is refused.
    `device` names this client's device: a newer connection with the same
    user and device replaces this one (close 4409, `Replaced` event, and the
    client stops instead of fighting back).

    Events come through `async for event in client` (one consumer; they are
    buffered from `connect()` on, so none are lost between `subscribe()` and
    the loop), and/or through handlers registered with `on()`. The buffer is
    not bounded: a client that awaits a send inside its event loop must never
    deadlock against its own reader, and the application is expected to
    consume what it subscribed to. Pass `buffer_events=False` when only
    handlers are used.
    """

    def __init__(
        self,
        url: str,
        token: str | TokenProvider,
        *,
        device: str | None = None,
        backoff: Backoff | None = None,
        heartbeat: float = 20.0,
        open_timeout: float = 15.0,
        max_send_attempts: int = 8,
        retry_rate_limited: bool = True,
        buffer_events: bool = True,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.endpoints = Endpoints.from_url(url)
        self.tokens = TokenSource(token)
        self.device = device
        self.backoff = backoff or Backoff()
        self.heartbeat = heartbeat
        self.open_timeout = open_timeout
        self.max_send_attempts = max_send_attempts
        self.retry_rate_limited = retry_rate_limited
        self.user: str | None = None  # from the latest `hello`
        self.rooms: tuple[str, ...] = ()  # the user's rooms, from the latest `hello`
        self._http = session
        self._own_http = session is None
        self._rest: RestClient | None = None
        self._state = ConnectionState.CLOSED
        self._stream = EventStream(buffer=buffer_events)
        self._session = Session(
            self._stream.emit,
            self.backoff,
            max_send_attempts=max_send_attempts,
            retry_rate_limited=retry_rate_limited,
        )
        self._generation = 0
        self._connected_once = False
        self._closing = False
        self._stopped: ClientError | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._closed_error = ClientClosed("the client was closed")

    # Lifecycle -------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def subscriptions(self) -> tuple[str, ...]:
        return tuple(self._session.cursors)

    @property
    def unacked(self) -> int:
        """Sends not acked yet (they are retried until acked or failed)."""
        return len(self._session.outbox)

    def last_seq(self, room: str) -> int | None:
        """The last seq delivered for a subscribed room (what a resume passes as `since`)."""
        cursor = self._session.cursors.get(room)
        return cursor.last_seq if cursor is not None else None

    @property
    def rest(self) -> RestClient:
        """The REST API of the same node, with the same token (e.g. `await client.rest.rooms()`)."""
        if self._rest is None:
            self._rest = RestClient(self.endpoints.http, self.tokens, self._http_client())
        return self._rest

    def _http_client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def connect(self) -> None:
        """Connect, and keep reconnecting in the background until `close()`.

        Returns once connected. Raises `Unauthorized` when the token is
        refused for good; a server that cannot be reached is retried without
        end (bound the wait with `asyncio.timeout`: a cancelled `connect`
        closes the client).
        """
        if self._run_task is not None:
            raise ClientError("connect() was called already")
        self._check_open()
        self._http_client()
        self._stream.start()
        self._run_task = asyncio.create_task(self._run(), name="parley-client")
        try:
            await self._wait_until(lambda: self._state is ConnectionState.CONNECTED)
        except ClientClosed:
            if self._stopped is not None and self._stopped is not self._closed_error:
                raise self._stopped from None
            raise
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection and stop; calls still waiting fail with `ClientClosed`."""
        self._closing = True
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stop(self._closed_error)
        await self._stream.wait_handlers()
        if self._own_http and self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_for_state(self, state: ConnectionState) -> None:
        """Wait until the connection is in `state` (raises `ClientClosed` if it stopped first)."""
        await self._wait_until(lambda: self._state is state)

    # Events ----------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Every event in order, until the client stops (`async for e in client` is the same)."""
        return self._stream.iterate()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._stream.iterate()

    def on(self, kind: type[E], handler: Handler[E]) -> Callable[[], None]:
        """Call `handler` (plain or async) for each event of type `kind`; returns an unregister.

        Handlers run one at a time, in event order, in a task of their own: a
        handler may await `send` without holding up the connection. An
        exception in a handler is logged and does not stop the others.

            client.on(Message, lambda m: print(m.sender, m.body))
        """
        return self._stream.on(kind, handler)

    # Calls -----------------------------------------------------------------------

    async def subscribe(self, room: str, *, since: int | None = None) -> Subscription:
        """Join a room; its messages then come as `Message` events, each once, in order.

        Without `since`, the room's most recent messages (up to 50) come first;
        with it, every message after that seq. Subscribing to a room already
        subscribed answers the same `Subscription`. Raises `NotMember`.

            sub = await client.subscribe("general")
            if sub.has_more:
                older = await client.history("general", before=sub.oldest)
        """
        self._check_open()
        cursor = self._session.cursors.get(room)
        if cursor is None:
            cursor = self._session.subscribe(room, since, self._future())
        return await asyncio.shield(cursor.ready)

    async def unsubscribe(self, room: str) -> None:
        """Stop receiving a room's messages (and stop resuming it after reconnects)."""
        self._session.unsubscribe(room)
        link = self._session.ready_link
        if link is None:
            return  # the next connection will not subscribe to it
        with contextlib.suppress(LinkLost):
            await link.request({"type": "unsubscribe", "room": room}, "unsubscribed")

    async def send(self, room: str, body: str, *, client_id: str | None = None) -> Ack:
        """Send a message and return its ack, once the message is durable.

        Sends may be pipelined (`asyncio.gather` over several): one client's
        messages to a room get seqs in the order `send` was called, except a
        send the server answered `rate_limited` or `internal`, which is
        retried after a delay and may land after later ones. The `client_id`
        (a random one when not given) is the idempotency key: until acked the
        send is written again after every reconnect, and the server answers a
        repeat with the original ack. Cancelling the call does not withdraw
        the message. Raises `NotMember`, `TooLarge`, `BadRequest`, and
        `RateLimited`/`Internal` once `max_send_attempts` are spent.

            ack = await client.send("general", "hello", client_id="greeting-1")
            print(ack.seq, ack.id)
        """
        self._check_open()
        trimmed = body.strip()
        if not trimmed:
            raise BadRequest("bad_request", "body is empty")
        if len(trimmed) > MAX_BODY_CHARS:
            raise TooLarge("too_large", f"body is over {MAX_BODY_CHARS} chars")
        client_id = client_id if client_id is not None else uuid.uuid4().hex
        if not 1 <= len(client_id) <= 64:
            raise BadRequest("bad_request", "client_id must be 1 to 64 chars")
        pending = self._session.outbox.get(room, client_id)
        if pending is None:
            pending = self._session.send(PendingSend(room, client_id, trimmed, self._future()))
        return await asyncio.shield(pending.future)

    async def history(
        self, room: str, *, before: int | None = None, limit: int = 50
    ) -> HistoryPage:
        """The `limit` (1..100) newest messages with seq < `before`, oldest first.

        History is not part of the event stream and is not de-duplicated
        against it: it is for looking further back. Raises `NotMember`.

            page = await client.history("general", before=120, limit=100)
            for m in page.messages: ...
        """
        frame: dict[str, Any] = {"type": "history", "room": room, "limit": limit}
        if before is not None:
            frame["before"] = before
        return parse_history(await self._request(frame, "history"))

    def typing(self, room: str) -> bool:
        """Tell the room's other members that the user is typing; False if not connected.

        It has no reply (errors come as `ServerErrorEvent`) and is not worth
        keeping across a reconnect, so it is dropped while disconnected.
        """
        link = self._session.ready_link
        if link is None:
            return False
        link.write({"type": "typing", "room": room})
        return True

    def read(self, room: str, seq: int) -> None:
        """Mark a room read up to `seq` (sent later if disconnected now; no reply)."""
        self._session.read(room, seq)

    async def ping(self) -> None:
        """A round trip to the server (waits for a connection first)."""
        await self._request({"type": "ping"}, "pong")

    # Internals: waiting ------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_swallow)
        return future

    def _check_open(self) -> None:
        if self._stopped is not None or self._closing:
            raise ClientClosed(f"the client is closed ({self._stopped})") from self._stopped

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._check_open()
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    async def _request(self, frame: dict[str, Any], reply: str) -> dict[str, Any]:
        """Make a read-only call, again on the next connection if this one drops."""
        while True:
            await self._wait_until(lambda: self._session.ready_link is not None)
            link = self._session.ready_link
            if link is None:
                continue
            try:
                return await link.request(frame, reply)
            except LinkLost:
                continue

    def _set_state(self, state: ConnectionState) -> None:
        previous, self._state = self._state, state
        if previous is not state:
            self._stream.emit(StateChanged(state, previous))
            self._notify()

    # Internals: the connection loop ----------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        refusals = 0
        reason: ClientError = self._closed_error
        try:
            while not self._closing:
                self._set_state(
                    ConnectionState.RECONNECTING
                    if self._connected_once
                    else ConnectionState.CONNECTING
                )
                try:
                    ws, hello, token = await self._open()
                except Refused as exc:
                    refusals += 1
                    self.tokens.invalidate(exc.token)  # raises Unauthorized for a fixed token
                    if refusals >= MAX_TOKEN_REFUSALS:
                        raise Unauthorized(f"{refusals} tokens in a row were refused") from None
                    if refusals > 1:  # the first refusal retries at once, with a new token
                        await asyncio.sleep(self.backoff.delay(attempt))
                        attempt += 1
                    continue
                except Retry as exc:
                    delay = self.backoff.delay(attempt)
                    attempt += 1
                    logger.info(
                        "cannot connect to %s (%s); retry in %.1fs", self.endpoints.ws, exc, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                code, why, lived = await self._serve(ws, hello)
                if self._closing:
                    break
                if code == CLOSE_REPLACED:
                    self._stream.emit(Replaced(why))
                    raise ConnectionReplaced(f"replaced by a newer connection: {why}")
                if code == CLOSE_UNAUTHORIZED:
                    refusals += 1
                    self.tokens.invalidate(token)
                    if refusals >= MAX_TOKEN_REFUSALS:
                        raise Unauthorized(f"{refusals} tokens in a row were refused")
                else:
                    refusals = 0
                if lived >= STABLE_S:
                    attempt = 0
                delay = self.backoff.delay(attempt)
                attempt += 1
                logger.info("connection closed (%s %s); reconnect in %.1fs", code, why, delay)
                await asyncio.sleep(delay)
        except ClientError as exc:
            reason = exc
        finally:
            self._stop(reason)

    async def _open(self) -> tuple[aiohttp.ClientWebSocketResponse, Connected, str]:
        try:
            token = await self.tokens.get()
        except ClientError:
            raise
        except Exception as exc:  # the provider's own trouble (its auth service is down...)
            raise Retry(f"token provider failed: {exc!r}") from exc
        try:
            async with asyncio.timeout(self.open_timeout):
                ws, hello = await open_connection(
                    self._http_client(),
                    self.endpoints.ws,
                    token,
                    device=self.device,
                    heartbeat=self.heartbeat,
                    reconnect=self._connected_once,
                )
        except TimeoutError:
            raise Retry(f"no hello within {self.open_timeout}s") from None
        return ws, hello, token

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, hello: Connected
    ) -> tuple[int | None, str, float]:
        """Run one connection to its end; returns its close code, reason and lifetime."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._generation += 1
        link = Link(ws, self._generation)
        self.user, self.rooms = hello.user, hello.rooms
        self._connected_once = True
        self._set_state(ConnectionState.CONNECTED)
        self._stream.emit(hello)
        self._session.attach(link)
        self._notify()
        reader = asyncio.create_task(self._read_loop(link))
        writer = asyncio.create_task(link.write_loop())
        why = ""
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                if (error := reader.exception()) is not None:
                    logger.error("reading the connection failed", exc_info=error)
                else:
                    why = reader.result()
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await ws.close()
            await self._session.detach(link)
            self._notify()
        return ws.close_code, why, loop.time() - started

    async def _read_loop(self, link: Link) -> str:
        while True:
            msg = await link.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    self._session.on_frame(link, decode(msg.data))
                except ProtocolViolation as exc:
                    logger.warning("ignored a frame that breaks the protocol: %s", exc)
            elif msg.type in CLOSED_TYPES:
                return str(msg.extra or "") if msg.type is aiohttp.WSMsgType.CLOSE else ""

    def _stop(self, reason: ClientError) -> None:
        if self._stopped is not None:
            return
        self._stopped = reason
        self._session.stop(reason)
        self._set_state(ConnectionState.CLOSED)
        self._stream.end()
        self._notify()
