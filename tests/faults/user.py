"""One simulated chat user of the fault tests: a connection that resumes, and what it saw.

A `SimClient` keeps one WebSocket at a time, subscribes to all its rooms and
sends what the traffic generator gives it, as a careful client would:

- every message gets a unique `client_id` once; an `error internal`, a
  missing reply or a lost connection makes it send the same `client_id`
  again, until an `ack` comes (PROTOCOL: retry with the same client_id);
- a lost connection (killed node, 1001 drain) is resumed on the *other*
  gateway, every room with `since` = the last seq it was given;
- at most `window` sends are in flight; the rest wait in its outbox (a
  client does not hammer a node that answers `internal`).

It records every `ack` and every message it is given (history and live), in
compact form: a 30-minute soak delivers millions of messages.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import aiohttp
import orjson

from tests.harness import token

REPLY_TIMEOUT_S = 30.0  # no ack/error this long after a send: send it again
MAX_BACKOFF_S = 4.0


# Message n of a run (n = 1, 2, ...) has client_id "c<n>" and a body that says
# who sent it where: a delivery is checked on arrival against both, and the
# records keep numbers, not strings (a 30-minute soak delivers millions).
def client_id_of(n: int) -> str:
    return f"c{n:07d}"


def number_of(client_id: str) -> int:
    """The message number of a client_id of this traffic; -1 for any other."""
    digits = client_id[1:]
    return int(digits) if client_id[:1] == "c" and digits.isdigit() else -1


def body_of(sender: str, n: int, room: str) -> str:
    return f"{sender} #{n} to {room}"


class Endpoint(Protocol):
    @property
    def ws_url(self) -> str: ...


# What a client saw ----------------------------------------------------------------


@dataclass(slots=True)
class Outgoing:
    """A message of this client not acked yet."""

    room: str
    n: int
    attempts: int = 0

    @property
    def client_id(self) -> str:
        return client_id_of(self.n)


class AckInfo(NamedTuple):
    room: str
    id: str
    seq: int


@dataclass(slots=True)
class SessionInfo:
    """One WebSocket of a client: where, when, how it ended."""

    node: int
    opened: float
    since: dict[str, int]
    ready: float | None = None
    closed: float | None = None
    close_code: int | None = None


def _floats() -> array[float]:
    return array("d")


@dataclass
class Stats:
    """Counters and timings shared by every client of one run (times: time.monotonic())."""

    attempts: int = 0
    retries: int = 0
    internal_errors: int = 0
    rate_limited: int = 0
    reply_timeouts: int = 0
    failed_connects: int = 0
    subscribe_errors: int = 0
    truncated_resumes: int = 0
    bad_bodies: int = 0
    delivered: int = 0  # message deliveries, history and live
    expected: int = 0  # deliveries the acked messages owe: members of their rooms
    unexpected: list[str] = field(default_factory=list)  # frames no correct server sends
    ack_conflicts: list[str] = field(default_factory=list)
    created: array[float] = field(default_factory=_floats)  # by message number
    ack_at: array[float] = field(default_factory=_floats)  # in time order ...
    ack_wait: array[float] = field(default_factory=_floats)  # ... first send → ack
    ack_n: array[int] = field(default_factory=lambda: array("q"))  # ... which message
    delivery_at: array[float] = field(default_factory=_floats)
    delivery_wait: array[float] = field(default_factory=_floats)  # creation → delivery
    error_at: array[float] = field(default_factory=_floats)
    room_size: dict[str, int] = field(default_factory=dict)

    def note(self, what: str) -> None:
        if len(self.unexpected) < 200:
            self.unexpected.append(what)

    def between(self, times: array[float], start: float, end: float) -> tuple[int, int]:
        """Index range of a time-ordered array within [start, end]."""
        return bisect.bisect_left(times, start), bisect.bisect_right(times, end)


class SimClient:
    """One user with one connection at a time, resumed elsewhere when it drops."""

    def __init__(
        self,
        user: str,
        rooms: Sequence[str],
        endpoints: Sequence[Endpoint],
        home: int,
        stats: Stats,
        window: int,
    ) -> None:
        self.user = user
        self.rooms = tuple(rooms)
        self.endpoints = endpoints
        self.node = home
        self.stats = stats
        self.window = window
        # What this user was given, per room, in order: seq and message number.
        self.got_seq: dict[str, array[int]] = {r: array("q") for r in self.rooms}
        self.got_n: dict[str, array[int]] = {r: array("q") for r in self.rooms}
        self.last_seq: dict[str, int] = dict.fromkeys(self.rooms, -1)
        self.pending: dict[int, Outgoing] = {}  # sent (or to send), not acked yet
        self.acks: dict[int, AckInfo] = {}
        self.sessions: list[SessionInfo] = []
        self._outbox: deque[int] = deque()
        self._queued: set[int] = set()
        self._in_flight: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self.ready = asyncio.Event()  # set while a session is subscribed to every room

    # The traffic generator's side ----------------------------------------------------

    def enqueue(self, out: Outgoing) -> None:
        self.pending[out.n] = out
        self._requeue(out.n)

    def _requeue(self, n: int, front: bool = False) -> None:
        if n not in self.pending or n in self._queued or n in self._in_flight:
            return
        self._queued.add(n)
        if front:
            self._outbox.appendleft(n)
        else:
            self._outbox.append(n)
        self._wake.set()

    def backlog(self) -> int:
        """Messages of this client not acked yet (queued, in flight or waiting to retry)."""
        return len(self.pending)

    @property
    def connected_to(self) -> int | None:
        s = self.sessions[-1] if self.sessions else None
        return s.node if s is not None and s.closed is None else None

    # The connection --------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.1
        async with aiohttp.ClientSession() as http:
            while not self._stop.is_set():
                url = self.endpoints[self.node].ws_url
                try:
                    async with asyncio.timeout(10):
                        ws = await http.ws_connect(
                            url,
                            params={"token": token(self.user, ttl=24 * 3600)},
                            heartbeat=10,
                            max_msg_size=0,
                            timeout=aiohttp.ClientWSTimeout(ws_close=5),
                        )
                except (aiohttp.ClientError, OSError, TimeoutError):
                    self.stats.failed_connects += 1
                    self.node = (self.node + 1) % len(self.endpoints)
                    await self._pause(backoff)
                    backoff = min(2.0, backoff * 2)
                    continue
                backoff = 0.1
                self._ws = ws
                try:
                    await self._session(ws)
                except Exception as exc:  # a bug here must show in the report, not hang it
                    self.stats.note(f"{self.user}: client failed: {exc!r}")
                finally:
                    self._ws = None
                    with contextlib.suppress(Exception):
                        await ws.close()
                # Resume on the other node: the one we were on is going away or gone.
                self.node = (self.node + 1) % len(self.endpoints)
                if not self._stop.is_set():
                    await self._pause(0.05)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _session(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        info = SessionInfo(self.node, time.monotonic(), dict(self.last_seq))
        self.sessions.append(info)
        sender: asyncio.Task[None] | None = None
        waiting = set(self.rooms)
        try:
            for room in self.rooms:
                await ws.send_str(
                    orjson.dumps(
                        {
                            "type": "subscribe",
                            "room": room,
                            "since": self.last_seq[room],
                            "ref": f"sub:{room}",
                        }
                    ).decode()
                )
            while not self._stop.is_set():
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    if not self._frame(orjson.loads(msg.data), waiting):
                        break
                    if not waiting and sender is None:
                        info.ready = time.monotonic()
                        self.ready.set()
                        sender = asyncio.create_task(self._send_loop(ws))
                    continue
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    info.close_code = int(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.stats.note(f"{self.user}: binary frame")
                    continue
                break
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self.ready.clear()
            info.closed = time.monotonic()
            if info.close_code is None:
                info.close_code = ws.close_code
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
            # Whatever was in flight is sent again on the next connection.
            for n in list(self._in_flight):
                del self._in_flight[n]
                self._requeue(n, front=True)

    async def _send_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._stop.is_set() and not ws.closed:
            while self._outbox and len(self._in_flight) < self.window:
                n = self._outbox.popleft()
                self._queued.discard(n)
                out = self.pending.get(n)
                if out is None:
                    continue  # acked meanwhile
                out.attempts += 1
                self.stats.attempts += 1
                if out.attempts > 1:
                    self.stats.retries += 1
                self._in_flight[n] = time.monotonic()
                client_id = client_id_of(n)
                await ws.send_str(
                    orjson.dumps(
                        {
                            "type": "send",
                            "ref": client_id,
                            "room": out.room,
                            "client_id": client_id,
                            "body": body_of(self.user, n, out.room),
                        }
                    ).decode()
                )
            self._wake.clear()
            # asyncio.timeout, not wait_for: in 3.11 wait_for swallows a cancel
            # that races with the event being set (stop() does both).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            now = time.monotonic()
            for n, sent in list(self._in_flight.items()):
                if now - sent > REPLY_TIMEOUT_S:
                    self.stats.reply_timeouts += 1
                    del self._in_flight[n]
                    self._requeue(n, front=True)

    # Frames ------------------------------------------------------------------------------

    def _frame(self, frame: dict[str, Any], waiting: set[str]) -> bool:
        """Handle one frame; False ends the session (to resume elsewhere)."""
        kind = frame.get("type")
        now = time.monotonic()
        if kind == "message":
            self.on_message(frame["room"], frame, now)
        elif kind == "history":
            room = frame["room"]
            ref = frame.get("ref")
            if frame.get("has_more") and ref == f"sub:{room}" and self.last_seq.get(room, -1) >= 0:
                self.stats.truncated_resumes += 1
            for m in frame["messages"]:
                self.on_message(room, m, now)
            if ref == f"sub:{room}":
                waiting.discard(room)
        elif kind == "ack":
            self.on_ack(frame, now)
        elif kind == "error":
            return self._error(frame, now)
        elif kind == "unsubscribed":
            self.stats.note(f"{self.user}: unsubscribed without asking: {frame}")
        elif kind not in ("hello", "subscribed", "presence", "typing", "receipt", "pong"):
            self.stats.note(f"{self.user}: unknown frame {frame}")
        return True

    def on_message(self, room: str, m: Mapping[str, Any], now: float) -> None:
        """Record one message given to this user (live or in a history frame)."""
        stats = self.stats
        if room not in self.got_seq:
            stats.note(f"{self.user} got a message of {room}, not one of its rooms")
            return
        seq = int(m["seq"])
        n = number_of(str(m["client_id"]))
        if n < 0 or n >= len(stats.created):
            stats.note(f"{self.user} got a message this traffic never sent: {dict(m)}")
            return
        if m["body"] != body_of(str(m["sender"]), n, room):
            stats.bad_bodies += 1
            stats.note(f"{self.user} got {room} seq {seq} with body {m['body']!r}")
        self.got_seq[room].append(seq)
        self.got_n[room].append(n)
        if seq > self.last_seq[room]:
            self.last_seq[room] = seq
        stats.delivered += 1
        stats.delivery_at.append(now)
        stats.delivery_wait.append(now - stats.created[n])

    def on_ack(self, frame: Mapping[str, Any], now: float) -> None:
        """Record an ack: the first one of a message, or a repeat that must agree with it."""
        client_id = str(frame.get("client_id"))
        n = number_of(client_id)
        ack = AckInfo(str(frame.get("room")), str(frame["id"]), int(frame["seq"]))
        seen = self.acks.get(n)
        if seen is not None:
            if (seen.id, seen.seq) != (ack.id, ack.seq):
                self.stats.ack_conflicts.append(
                    f"{self.user} {client_id}: acked as {seen.id}/{seen.seq},"
                    f" then as {ack.id}/{ack.seq}"
                )
            return
        out = self.pending.pop(n, None)
        if out is None:
            self.stats.note(f"{self.user}: ack of a client_id never sent: {dict(frame)}")
            return
        self._in_flight.pop(n, None)
        if ack.room != out.room:
            self.stats.ack_conflicts.append(f"{self.user} {client_id}: ack for another room")
        self.acks[n] = ack
        self.stats.ack_at.append(now)
        self.stats.ack_wait.append(now - self.stats.created[n])
        self.stats.ack_n.append(n)
        self.stats.expected += self.stats.room_size.get(out.room, 0)

    def _error(self, frame: Mapping[str, Any], now: float) -> bool:
        code, ref = frame.get("code"), frame.get("ref")
        if isinstance(ref, str) and ref.startswith("sub:"):
            # A room this session cannot resume (the database or log is down):
            # drop the connection and resume on the other node shortly.
            self.stats.subscribe_errors += 1
            return False
        n = number_of(ref) if isinstance(ref, str) else -1
        out = self.pending.get(n)
        if out is None:
            if n < 0 and code != "internal":
                self.stats.note(f"{self.user}: error without a send: {dict(frame)}")
            return True  # an error for a send acked meanwhile (by an earlier attempt)
        self._in_flight.pop(n, None)
        if code == "internal":
            self.stats.internal_errors += 1
            self.stats.error_at.append(now)
            delay = min(MAX_BACKOFF_S, 0.25 * 2 ** min(out.attempts - 1, 5))
        elif code == "rate_limited":
            self.stats.rate_limited += 1
            delay = 1.0
        else:
            self.stats.note(f"{self.user}: {dict(frame)}")
            return True
        asyncio.get_running_loop().call_later(delay, self._requeue, n)
        return True
