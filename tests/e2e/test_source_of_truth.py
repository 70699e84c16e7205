"""The log is the source of truth: resume, history and retention around the store.

Issue 4's points on history: `since` and `history` miss nothing on any node
even when the persistence worker is stopped and the node started after the
messages were written (its memory does not hold them: they are read back
from the log partition), the replay cap pages the rest, and a room's history
outlives the log's retention because the store keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from tests.conftest import new_prefix, pg_database
from tests.harness import Cluster, ServerProcess, WsClient, base_env

BACKENDS = pytest.mark.parametrize("backend", ["embedded", "kafka"])


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in messages]


@contextlib.asynccontextmanager
async def nodes(
    backend: str, tmp_path: Path, services: dict[str, str], count: int, **extra: str
) -> AsyncIterator[Cluster]:
    """`count` nodes on one log and one database (the embedded log: one node)."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "kafka":
            db = await stack.enter_async_context(pg_database(services["db"]))
            env = base_env(new_prefix(), services["kafka"], db, tmp_path / "data")
        else:
            count = 1
            env = base_env(new_prefix(), None, f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "data")
        env.update(extra)
        servers = [
            ServerProcess(env=dict(env), node_id=f"s{i}", log_path=tmp_path / f"s{i}.log")
            for i in range(count)
        ]
        cluster = Cluster(backend, servers, aiohttp.ClientSession())
        stack.push_async_callback(cluster.close)
        for s in servers:
            await s.start()
        yield cluster


async def page_back_to(
    client: WsClient, room: str, before: int, since: int
) -> list[dict[str, Any]]:
    """What a client does after `has_more`: page back until it reaches `since`."""
    older: list[dict[str, Any]] = []
    while True:
        page = await client.request("history", "history", room=room, before=before, limit=7)
        fresh = [m for m in page["messages"] if m["seq"] > since]
        older = fresh + older
        if len(fresh) < len(page["messages"]) or not page["has_more"] or not fresh:
            return older
        before = fresh[0]["seq"]


@BACKENDS
async def test_resume_on_a_node_started_later_while_the_worker_is_stopped(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """The resuming node never had these messages in memory, and the store has none."""
    async with nodes(
        backend,
        tmp_path,
        services,
        2,
        PARLEY_WORKERS="",
        PARLEY_ROOM_WINDOW="10",
        PARLEY_IDEMPOTENCY_WINDOW="2",  # a restarted node reads back only 2 s of log
        PARLEY_LOG_RETENTION_HOURS="1",
        PARLEY_REPLAY_CAP="12",
    ) as cluster:
        room = f"r{uuid.uuid4().hex[:8]}"
        await cluster.api("alice").create_room(room, ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"m{i}") for i in range(40)]
        await asyncio.sleep(2.5)
        last = cluster.nodes[-1]
        await last.restart()  # its read-back now starts after every message above
        alice = await cluster.connect("alice")
        bob = await cluster.connect("bob", node=len(cluster.nodes) - 1)

        # Within the replay cap: everything after since, then live.
        _, hist = await bob.subscribe(room, since=acks[30]["seq"])
        assert ids(hist["messages"]) == ids(acks[31:]) and hist["has_more"] is False
        live = await alice.send_message(room, "live")
        await bob.expect("message", room=room, id=live["id"])

        # Over the cap: the newest 12, has_more, and paging reaches since exactly.
        _, capped = await bob.subscribe(room, since=acks[4]["seq"])
        assert capped["has_more"] is True
        assert ids(capped["messages"]) == ids([*acks[-11:], live])
        older = await page_back_to(bob, room, capped["messages"][0]["seq"], acks[4]["seq"])
        assert ids(older + capped["messages"]) == ids([*acks[5:], live])

        # history pages from the log as well, with has_more right at the start.
        page = await bob.request("history", "history", room=room, before=acks[20]["seq"], limit=5)
        assert ids(page["messages"]) == ids(acks[15:20]) and page["has_more"] is True
        first = await bob.request("history", "history", room=room, before=acks[3]["seq"])
        assert ids(first["messages"]) == ids(acks[:3]) and first["has_more"] is False
        await bob.drain(0.3)
        lives = [f["id"] for f in bob.frames if f.get("type") == "message"]
        assert lives == [live["id"]]
        assert "read back from the log" in last.output()  # the path this test is about


@BACKENDS
async def test_resume_after_the_worker_catches_up_has_no_seam(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """Part from the store, part from the log, part from memory: one exact sequence."""
    async with nodes(
        backend,
        tmp_path,
        services,
        1,
        PARLEY_WORKERS="",
        PARLEY_ROOM_WINDOW="5",
        PARLEY_IDEMPOTENCY_WINDOW="2",
        PARLEY_LOG_RETENTION_HOURS="1",
    ) as cluster:
        room = f"r{uuid.uuid4().hex[:8]}"
        await cluster.api("alice").create_room(room, ["bob"])
        alice = await cluster.connect("alice")
        early = [await alice.send_message(room, f"early {i}") for i in range(15)]
        await alice.close()
        await asyncio.sleep(2.5)
        node = cluster.nodes[0]
        node.env["PARLEY_WORKERS"] = "persist"
        await node.restart()  # the worker now writes `early`; this node holds none of it
        alice = await cluster.connect("alice")
        late = [await alice.send_message(room, f"late {i}") for i in range(15)]
        bob = await cluster.connect("bob")
        _, hist = await bob.subscribe(room, since=early[2]["seq"])
        assert ids(hist["messages"]) == ids(early[3:] + late)
        status, body = await cluster.api("bob").call("GET", f"/api/rooms/{room}/messages?limit=100")
        assert status == 200 and ids(body["messages"]) == ids(early + late)


async def test_read_state_follows_the_user_to_another_node(
    tmp_path: Path, services: dict[str, str]
) -> None:
    async with nodes("kafka", tmp_path, services, 2) as cluster:
        room = f"r{uuid.uuid4().hex[:8]}"
        await cluster.api("alice").create_room(room, ["bob"])
        bob = await cluster.connect("bob", node=1)
        sent = [await bob.send_message(room, f"b{i}") for i in range(6)]
        alice = await cluster.connect("alice", node=0)
        await alice.subscribe(room)
        await alice.send(type="read", room=room, seq=sent[3]["seq"])
        await bob.subscribe(room)
        await bob.expect("receipt", room=room, user="alice", seq=sent[3]["seq"])
        await alice.close()
        # Right after reconnecting to the other node:
        again = await cluster.connect("alice", node=1)
        status, rooms = await cluster.api("alice", node=1).call("GET", "/api/rooms")
        assert status == 200
        mine = next(r for r in rooms if r["id"] == room)
        assert (mine["head"], mine["last_read"], mine["unread"]) == (
            sent[-1]["seq"],
            sent[3]["seq"],
            2,
        )
        await again.send(type="read", room=room, seq=sent[-1]["seq"])
        await bob.expect("receipt", room=room, user="alice", seq=sent[-1]["seq"])
        status, rooms = await cluster.api("alice", node=0).call("GET", "/api/rooms")
        mine = next(r for r in rooms if r["id"] == room)
        assert (mine["last_read"], mine["unread"]) == (sent[-1]["seq"], 0)


def _topic_retention(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(timeout=15)
    return str(config["retention.ms"].value)


def _expire_everything(bootstrap: str, topic: str) -> None:
    """What retention does to old segments, at once: move every log start to its end."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    wanted = [TopicPartition(topic, p, -1) for p in partitions]  # -1: the high watermark
    for future in admin.delete_records(wanted, operation_timeout=15).values():
        future.result(timeout=15)


async def _wait_persisted(db: str, room: str, count: int) -> None:
    conn = await asyncpg.connect(db)
    try:
        for _ in range(300):
            n = await conn.fetchval("SELECT COUNT(*) FROM messages WHERE room_id = $1", room)
            if n >= count:
                return
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    raise AssertionError(f"{room}: fewer than {count} rows after 30 s")


async def test_history_outlives_kafka_retention(tmp_path: Path, services: dict[str, str]) -> None:
    async with nodes(
        "kafka",
        tmp_path,
        services,
        1,
        PARLEY_LOG_RETENTION_HOURS="0.5",
        PARLEY_IDEMPOTENCY_WINDOW="60",
    ) as cluster:
        node = cluster.nodes[0]
        topic = f"{node.env['PARLEY_TOPIC_PREFIX']}.messages"
        bootstrap = services["kafka"]
        assert await asyncio.to_thread(_topic_retention, bootstrap, topic) == "1800000"
        room = f"r{uuid.uuid4().hex[:8]}"
        await cluster.api("alice").create_room(room, ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"kept {i}") for i in range(20)]
        await _wait_persisted(node.env["PARLEY_DATABASE_URL"], room, 20)
        await alice.close()
        await asyncio.to_thread(_expire_everything, bootstrap, topic)
        node.env["PARLEY_LOG_RETENTION_HOURS"] = "2"
        await node.restart()
        # A changed setting reaches the existing topic.
        assert await asyncio.to_thread(_topic_retention, bootstrap, topic) == "7200000"
        bob = await cluster.connect("bob")
        _, hist = await bob.subscribe(room, since=acks[1]["seq"])
        assert ids(hist["messages"]) == ids(acks[2:])
        status, body = await cluster.api("bob").call("GET", f"/api/rooms/{room}/messages")
        assert status == 200 and ids(body["messages"]) == ids(acks)
        more = await bob.send_message(room, "after retention")
        assert more["seq"] > acks[-1]["seq"]


async def test_history_outlives_embedded_log_retention(
    tmp_path: Path, services: dict[str, str]
) -> None:
    async with nodes(
        "embedded",
        tmp_path,
        services,
        1,
        PARLEY_LOG_RETENTION_HOURS="0.001",  # 3.6 s
        PARLEY_IDEMPOTENCY_WINDOW="2",
    ) as cluster:
        room = f"r{uuid.uuid4().hex[:8]}"
        await cluster.api("alice").create_room(room, ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"kept {i} " + "x" * 500) for i in range(20)]
        _, body = await cluster.api("bob").call("GET", f"/api/rooms/{room}/messages")
        assert ids(body["messages"]) == ids(acks)
        await alice.close()
        data = tmp_path / "data" / "log"
        before = sum(p.stat().st_size for p in data.glob("*.messages-*.log"))
        await asyncio.sleep(4.0)
        await cluster.nodes[0].restart()
        after = sum(p.stat().st_size for p in data.glob("*.messages-*.log"))
        assert after < before / 2  # the log let the records go ...
        bob = await cluster.connect("bob")
        _, hist = await bob.subscribe(room, since=acks[1]["seq"])
        assert ids(hist["messages"]) == ids(acks[2:])  # ... the store did not
        more = await bob.send_message(room, "after retention")
        assert more["seq"] > acks[-1]["seq"]
