"""The notify worker: tell members who are not connected that they have messages.

Consumer group `<prefix>.notify`. For each message, the room's members other
than the sender who have no open session anywhere in the cluster get a
notification. Who is online comes from the gateways' presence events and
heartbeats on the events topic (the same Presence that gateways keep).

A send that reached the log twice (a retry on two gateways) is notified
once: its first record, as gateways and the store decide (FirstSends).

A burst becomes one notification per user: the worker lets a batch fill for
`coalesce_s` after its first record, then sends each recipient one
notification listing their unread messages (newest last, at most
MAX_LISTED) and the count per room.

Effect: at least once, with a stable id. Offsets are committed after the
batch's notifications were accepted; a sender failure retries the batch
without re-sending what was already accepted, and a crash may re-send a
batch, each notification with the same `id` (the `X-Parley-Delivery`
header), so that receivers can drop what they have seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import orjson

from parley.log.base import GroupConsumer, Log, LogRecord, TailReader
from parley.log.records import decode_event, decode_message, events_topic, messages_topic
from parley.metrics import Metrics
from parley.presence import Presence
from parley.protocol.messages import ChatMessage, format_ts
from parley.protocol.names import dm_members
from parley.storage.base import Store, StoreUnavailable
from parley.workers.firsts import FirstSends
from parley.workers.runner import run_worker

logger = logging.getLogger(__name__)

MAX_LISTED = 10


def notify_group(prefix: str) -> str:
    return f"{prefix}.notify"


class NotifyUnavailable(Exception):
    """The receiver did not take a notification; the batch is retried later."""


@dataclass(slots=True)
class Notification:
    user: str
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def id(self) -> str:
        """Stable for the same messages: a re-sent notification keeps its id."""
        first, last = self.messages[0], self.messages[-1]
        return f"{self.user}:{first.id}:{last.id}:{len(self.messages)}"

    def payload(self) -> dict[str, object]:
        rooms: dict[str, int] = {}
        for m in self.messages:
            rooms[m.room] = rooms.get(m.room, 0) + 1
        return {
            "id": self.id,
            "user": self.user,
            "count": len(self.messages),
            "rooms": rooms,
            "messages": [
                {
                    "room": m.room,
                    "id": m.id,
                    "seq": m.seq,
                    "sender": m.sender,
                    "body": m.body,
                    "ts": format_ts(m.ts_ms),
                }
                for m in self.messages[-MAX_LISTED:]
            ],
        }


class Sender(Protocol):
    """Where notifications go. Raise NotifyUnavailable to have the batch retried."""

    async def send(self, note: Notification) -> None: ...


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    """POSTs each notification as JSON, signed with HMAC-SHA256 over the exact body.

    Headers: `X-Parley-Signature: sha256=<hex>`, `X-Parley-Delivery: <id>`.
    A 2xx is success; a connection error, a timeout, 408, 429 or 5xx is
    retried with jittered exponential backoff; after `attempts` it raises
    NotifyUnavailable. Any other 4xx is the receiver refusing this one
    notification: logged and dropped, never retried for ever.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 5,
        backoff_s: float = 0.2,
        timeout_s: float = 10.0,
    ) -> None:
        self._url = url
        self._secret = secret
        self._attempts = attempts
        self._backoff = backoff_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, note: Notification) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = orjson.dumps(note.payload())
        headers = {
            "Content-Type": "application/json",
            "X-Parley-Signature": sign(self._secret, body),
            "X-Parley-Delivery": note.id,
        }
        delay = self._backoff
        problem = ""
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay *= 2
            try:
                async with self._session.post(self._url, data=body, headers=headers) as resp:
                    if 200 <= resp.status < 300:
                        return
                    if resp.status not in (408, 429) and resp.status < 500:
                        logger.warning("webhook refused notification %s: %d", note.id, resp.status)
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
        raise NotifyUnavailable(f"webhook {self._url}: {problem} after {self._attempts} attempts")


class NotifyWorker:
    def __init__(
        self,
        log: Log,
        store: Store,
        prefix: str,
        metrics: Metrics,
        sender: Sender,
        *,
        presence_timeout_s: float,
        coalesce_s: float,
        window_s: int = 24 * 3600,
    ) -> None:
        self._firsts = FirstSends(window_s * 1000)
        self._log = log
        self._store = store
        self._prefix = prefix
        self._sender = sender
        self._coalesce_s = coalesce_s
        self._presence_timeout_s = presence_timeout_s
        self.presence = Presence(presence_timeout_s)
        self._consumer: GroupConsumer | None = None
        self._sent_in_batch: set[str] = set()
        self._batch_messages: list[ChatMessage] = []
        self._sent = metrics.counter("parley_notifications_total", "notifications sent")
        metrics.gauge("parley_notify_lag", "records the notify worker has not read", self.lag)

    def lag(self) -> int:
        return self._consumer.lag() if self._consumer is not None else 0

    def _on_events(self, records: list[LogRecord]) -> None:
        now = time.monotonic()
        for rec in records:
            event = decode_event(rec)
            if event is None:
                continue
            if event.kind == "presence":
                for user in event.presence_users():
                    self.presence.on_status(event.node, user, event.status, now)
            elif event.kind == "heartbeat":
                self.presence.on_heartbeat(event.node, event.users, now)

    async def recipients(self, messages: Sequence[ChatMessage]) -> list[Notification]:
        """One notification per offline member, their messages in log order."""
        self.presence.expire(time.monotonic())
        members: dict[str, frozenset[str]] = {}
        notes: dict[str, Notification] = {}
        for msg in messages:
            if msg.room not in members:
                pair = dm_members(msg.room)  # a DM room's members are in its id
                members[msg.room] = (
                    frozenset(pair)
                    if pair is not None
                    else await self._store.members(msg.room) or frozenset()
                )
            for user in sorted(members[msg.room]):
                if user == msg.sender or self.presence.is_online(user):
                    continue
                notes.setdefault(user, Notification(user)).messages.append(msg)
        return list(notes.values())

    async def _handle(self, records: list[LogRecord]) -> None:
        if self._sent_in_batch:
            # A retry of this batch: its repeats were dropped the first time.
            messages = self._batch_messages
        else:
            decoded = (decode_message(r) for r in records)
            messages = [m for m in decoded if m is not None and self._firsts.first(m)]
            self._batch_messages = messages
        for note in await self.recipients(messages):
            if note.id in self._sent_in_batch:
                continue  # taken before a retry of this batch
            await self._sender.send(note)
            self._sent_in_batch.add(note.id)
            self._sent.value += 1
        self._sent_in_batch.clear()

    async def _follow_presence(self) -> TailReader:
        """Read presence from a timeout ago, and wait until caught up with it."""
        since = int(time.time() * 1000) - int(self._presence_timeout_s * 1000)
        read: dict[int, int] = {}
        caught_up = asyncio.Event()

        def on_batch(records: list[LogRecord]) -> None:
            for r in records:
                read[r.partition] = r.offset + 1
            self._on_events(records)
            if all(read.get(p, 0) >= end for p, end in ends.items()):
                caught_up.set()

        reader = self._log.tail(events_topic(self._prefix), since, on_batch)
        starts = await reader.start()
        ends = {p: e for p, e in reader.end_offsets_at_start().items() if e > starts.get(p, 0)}
        if ends:
            await asyncio.wait_for(caught_up.wait(), 60)
        return reader

    async def run(self, stop: asyncio.Event) -> None:
        reader = await self._follow_presence()
        try:
            self._consumer = self._log.group(
                messages_topic(self._prefix), notify_group(self._prefix)
            )
            await run_worker(
                "notify",
                self._consumer,
                self._handle,
                stop,
                linger_s=self._coalesce_s,
                retriable=(StoreUnavailable, NotifyUnavailable),
            )
        finally:
            await reader.stop()
