"""Workers' logic without a broker: the webhook sender, notification recipients,
exactly-once counting over a real (SQLite) store, and the batch runner."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from parley.log.base import LogRecord, TopicSpec
from parley.log.embedded import EmbeddedLog
from parley.log.records import encode_message
from parley.metrics import Metrics
from parley.protocol.messages import ChatMessage
from parley.storage.base import RoomMinute
from parley.storage.sqlite import SqliteStore
from parley.workers.analytics import message_counts, minute_of
from parley.workers.counting import count_once
from parley.workers.notify import (
    Notification,
    NotifyUnavailable,
    NotifyWorker,
    WebhookSender,
)
from parley.workers.runner import run_worker

SECRET = "hook-secret"
TS = 1_764_136_800_123


def message(room: str, seq: int, sender: str = "alice") -> ChatMessage:
    return ChatMessage(room, f"0-{seq}", seq, sender, f"body {seq}", TS + seq, f"c{seq}")


def record(room: str, offset: int, sender: str = "alice", partition: int = 0) -> LogRecord:
    value = encode_message(sender, f"c{offset}", f"body {offset}", TS + offset)
    return LogRecord("t", partition, offset, room.encode(), value, TS + offset)


class Receiver:
    """A webhook endpoint that answers a scripted status per request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def receiver_url() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver([])
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield receiver, f"http://127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


def note() -> Notification:
    return Notification("carol", [message("r", 1), message("r", 5, "bob")])


async def test_webhook_signs_the_exact_body_and_names_the_delivery(
    receiver_url: tuple[Receiver, str],
) -> None:
    receiver, url = receiver_url
    sender = WebhookSender(url, SECRET)
    try:
        await sender.send(note())
    finally:
        await sender.close()
    [(headers, body)] = receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Parley-Signature"] == expected
    payload = orjson.loads(body)
    assert headers["X-Parley-Delivery"] == payload["id"] == note().id
    assert payload["user"] == "carol" and payload["count"] == 2
    assert payload["rooms"] == {"r": 2}
    assert [m["seq"] for m in payload["messages"]] == [1, 5]


async def test_webhook_retries_server_errors_then_succeeds(
    receiver_url: tuple[Receiver, str],
) -> None:
    receiver, url = receiver_url
    receiver.statuses = [500, 503, 429]
    sender = WebhookSender(url, SECRET, backoff_s=0.01)
    try:
        await sender.send(note())
    finally:
        await sender.close()
    assert len(receiver.requests) == 4
    assert len({h["X-Parley-Delivery"] for h, _ in receiver.requests}) == 1


async def test_webhook_gives_up_after_its_attempts(receiver_url: tuple[Receiver, str]) -> None:
    receiver, url = receiver_url
    receiver.statuses = [502] * 10
    sender = WebhookSender(url, SECRET, attempts=3, backoff_s=0.01)
    try:
        with pytest.raises(NotifyUnavailable, match="HTTP 502"):
            await sender.send(note())
    finally:
        await sender.close()
    assert len(receiver.requests) == 3


async def test_webhook_drops_a_refused_notification(receiver_url: tuple[Receiver, str]) -> None:
    receiver, url = receiver_url
    receiver.statuses = [400]
    sender = WebhookSender(url, SECRET, backoff_s=0.01)
    try:
        await sender.send(note())  # no exception, no retry
    finally:
        await sender.close()
    assert len(receiver.requests) == 1


class Collecting:
    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[Notification] = []
        self.fail = fail_first

    async def send(self, n: Notification) -> None:
        if self.fail:
            self.fail -= 1
            raise NotifyUnavailable("down")
        self.sent.append(n)


async def test_recipients_are_offline_members_but_the_sender(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.start()
    try:
        await store.create_room("r", "r", "alice", ["bob", "carol", "dave"])
        worker = NotifyWorker(
            EmbeddedLog(None),
            store,
            "p",
            Metrics(),
            Collecting(),
            presence_timeout_s=10,
            coalesce_s=0,
        )
        worker.presence.on_status("n1", "bob", "online", now=asyncio.get_running_loop().time())
        msgs = [message("r", 1), message("r", 2, "carol"), message("dm:alice:erin", 3)]
        notes = {n.user: [m.seq for m in n.messages] for n in await worker.recipients(msgs)}
        # bob is online; alice sent 1 and 3; carol sent 2; erin is in the DM.
        assert notes == {"carol": [1], "dave": [1, 2], "alice": [2], "erin": [3]}
    finally:
        await store.stop()


async def test_count_once_refuses_a_batch_seen_before(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.start()
    try:
        batch = [record("r", o, sender="bob" if o % 2 else "alice") for o in range(10)]
        applied = await count_once(store, "src", batch, message_counts)
        assert [r.offset for r in applied] == list(range(10))
        # Redelivered with more after it (a restart): only the new ones count.
        again = await count_once(store, "src", [*batch[5:], record("r", 10)], message_counts)
        assert [r.offset for r in again] == [10]
        minute = minute_of(TS)
        assert await store.room_stats("r", minute) == [RoomMinute("r", minute, 11, 0, 0, 2)]
    finally:
        await store.stop()


async def test_run_worker_commits_only_after_the_handler_and_retries_it(tmp_path: Path) -> None:
    log = EmbeddedLog(tmp_path / "log")
    await log.start()
    try:
        await log.ensure_topic(TopicSpec("t", 1))
        for i in range(5):
            await log.produce("t", 0, "r", encode_message("a", f"c{i}", "x", TS))
        calls: list[int] = []
        stop = asyncio.Event()

        async def handle(records: list[LogRecord]) -> None:
            calls.append(len(records))
            if len(calls) == 1:
                raise NotifyUnavailable("try again")
            stop.set()

        await asyncio.wait_for(
            run_worker("w", log.group("t", "g"), handle, stop, retriable=(NotifyUnavailable,)),
            10,
        )
        assert calls == [5, 5]
        assert log.group_offsets["g"]["t"] == {0: 5}
    finally:
        await log.stop()
