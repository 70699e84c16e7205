"""The workers beside the gateways, on real Kafka and PostgreSQL (issue 4).

Persistence killed mid-batch and rebalancing between several processes, the
notify worker's webhook as a receiver sees it, and the analytics worker's
counts at `GET /api/stats` and at its /metrics, through a kill and a re-read
of the whole log. The gateways run with `PARLEY_WORKERS=` (or only the
workers a test does not run as processes of their own), so that the
processes under test are the only members of their consumer groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.harness import (
    Cluster,
    ServerProcess,
    WorkerProcess,
    WsClient,
    base_env,
    free_port,
)

Sample = tuple[str, int, str, str, str, str]  # room, seq, id, sender, client_id, body


@contextlib.asynccontextmanager
async def gateways(
    tmp_path: Path, services: dict[str, str], db: str, prefix: str, count: int = 1, **settings: str
) -> AsyncIterator[Cluster]:
    """`count` gateway nodes on one prefix and database; by default they run no worker."""
    env = base_env(prefix, services["kafka"], db, tmp_path / "data")
    env["PARLEY_WORKERS"] = ""
    env.update(settings)
    nodes = [
        ServerProcess(env=dict(env), node_id=f"g{i}", log_path=tmp_path / f"gateway{i}.log")
        for i in range(count)
    ]
    cluster = Cluster("kafka", nodes, aiohttp.ClientSession())
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        yield cluster
    finally:
        await cluster.close()


WorkerFactory = Callable[..., Awaitable[WorkerProcess]]


@contextlib.asynccontextmanager
async def workers(cluster: Cluster, tmp_path: Path) -> AsyncIterator[WorkerFactory]:
    """Start workers on the cluster's settings; each is stopped (or found dead) at the end."""
    started: list[WorkerProcess] = []
    ids = itertools.count()

    async def start(name: str, **settings: str) -> WorkerProcess:
        n = next(ids)
        worker = WorkerProcess(
            name,
            {**cluster.nodes[0].env, **settings},
            tmp_path / f"worker-{name}-{n}.log",
            worker_id=f"{name}{n}",
        )
        started.append(worker)
        await worker.start()
        return worker

    try:
        yield start
    finally:
        for w in started:
            await w.stop()


async def send_pipelined(
    client: WsClient, sends: list[tuple[str, str]], timeout: float = 60.0
) -> list[Sample]:
    """Send every (room, body) without waiting in between; every one must be acked."""
    user = client.frames[0]["user"]
    pending = {f"p{i}": (room, uuid.uuid4().hex, body) for i, (room, body) in enumerate(sends)}
    replies: dict[str, dict[str, Any]] = {}

    async def read() -> None:
        while len(replies) < len(pending):
            msg = await client.ws.receive(timeout)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            if frame.get("ref") in pending and frame["type"] in ("ack", "error"):
                replies[frame["ref"]] = frame

    reader = asyncio.create_task(read())
    try:
        for ref, (room, client_id, body) in pending.items():
            await client.send(type="send", ref=ref, room=room, client_id=client_id, body=body)
        await reader
    finally:
        reader.cancel()
    out: list[Sample] = []
    for ref, (room, client_id, body) in pending.items():
        ack = replies[ref]
        assert ack["type"] == "ack", ack
        assert (ack["room"], ack["client_id"]) == (room, client_id), ack
        out.append((room, int(ack["seq"]), ack["id"], user, client_id, body))
    return out


async def stored(db: str) -> list[Sample]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT room_id, seq, id, sender, client_id, body FROM messages")
    finally:
        await conn.close()
    return sorted((r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in rows)


@dataclass
class RowCounter:
    """`SELECT count(*) FROM messages` on one kept connection: cheap enough to poll."""

    conn: asyncpg.Connection

    async def __call__(self) -> int:
        n: int = await self.conn.fetchval("SELECT count(*) FROM messages")
        return n


@contextlib.asynccontextmanager
async def row_counter(db: str) -> AsyncIterator[RowCounter]:
    conn = await asyncpg.connect(db)
    try:
        yield RowCounter(conn)
    finally:
        await conn.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(interval)


async def rooms_and_clients(
    cluster: Cluster, rooms: int, users: int, tag: str
) -> tuple[list[str], list[WsClient]]:
    """`rooms` rooms of which `users` users are all members, each user connected once."""
    names = [f"{tag}{i}" for i in range(rooms)]
    members = [f"{tag}u{i}" for i in range(users)]
    for room in names:
        await cluster.api(members[0]).create_room(room, members[1:])
    clients = [
        await cluster.connect(user, node=i % len(cluster.nodes)) for i, user in enumerate(members)
    ]
    return names, clients


# --- persistence ------------------------------------------------------------------------

# Enough for a dozen of the worker's batches (5,000 records): it writes one in tens of
# milliseconds, and with 20,000 a test loop held up on a loaded CI host saw the second
# kill land after the last of four.
PERSIST_N = 60_000
SENDERS = 30  # 2,000 sends each: within the harness's burst of PARLEY_RATE_BURST=2000


async def test_persist_worker_killed_mid_batch_loses_and_duplicates_nothing(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with (
        gateways(tmp_path, services, pg_url, prefix) as cluster,
        workers(cluster, tmp_path) as start_worker,
        row_counter(pg_url) as count,
    ):
        rooms, clients = await rooms_and_clients(cluster, 8, SENDERS, "kb")
        per_client = PERSIST_N // SENDERS
        began = time.monotonic()
        batches = await asyncio.gather(
            *(
                send_pipelined(c, [(rooms[n % len(rooms)], f"{i}:{n}") for n in range(per_client)])
                for i, c in enumerate(clients)
            )
        )
        sent = time.monotonic() - began
        acked = sorted(s for batch in batches for s in batch)
        assert len({(room, seq) for room, seq, *_ in acked}) == PERSIST_N
        assert await count() == 0, "no worker runs: nothing is written yet"

        # Killed twice while batches are on the way: at once after a batch landed (between
        # its database commit and its Kafka commit), then 0.1 s after one (inside the
        # next batch, which a worker that commits too early has already committed).
        worker = await start_worker("persist")
        at_kill = 0
        for delay in (0.0, 0.1):
            began = time.monotonic()
            while (now := await count()) == at_kill:
                assert time.monotonic() - began < 60, f"the worker wrote nothing after {at_kill}"
                await asyncio.sleep(0.01)
            await asyncio.sleep(delay)
            await worker.kill()
            at_kill = await count()
            assert now <= at_kill < PERSIST_N, (
                f"killed after {at_kill} of {PERSIST_N} rows: not mid-way (sent in {sent:.1f} s)"
            )
            await worker.start()
        await eventually(lambda: _equals(count, PERSIST_N), 45, f"{PERSIST_N} rows")
        assert await stored(pg_url) == acked, "every acked message exactly once, nothing else"

        async def caught_up() -> bool:
            return await worker.sample("parley_persist_lag") == 0

        await eventually(caught_up, 15, "parley_persist_lag back to 0", interval=0.5)
        written = await worker.sample("parley_persisted_total")
        assert written == PERSIST_N - at_kill, "the restarted worker wrote only the missing rows"
        assert await count() == PERSIST_N
        health = f"http://127.0.0.1:{worker.metrics_port}/healthz"
        async with cluster.http.get(health) as resp:
            assert resp.status == 200 and await resp.json() == {"ok": True}
        assert await worker.stop() == 0, worker.output()[-2000:]


async def _equals(count: RowCounter, n: int) -> bool:
    got = await count()
    assert got <= n, f"{got} rows for {n} messages"
    return got == n


async def keep_sending(
    clients: list[WsClient], rooms: list[str], stop: asyncio.Event, chunk: int = 50
) -> list[Sample]:
    """Traffic until `stop`: each client `chunk` pipelined sends at most every 0.1 s."""
    acked: list[Sample] = []

    async def one(i: int, client: WsClient) -> None:
        for n in itertools.count(step=chunk):
            if stop.is_set():
                return
            paced = asyncio.create_task(asyncio.sleep(0.1))  # stays under the rate limit
            sends = [(rooms[(n + k) % len(rooms)], f"{i}:{n + k}") for k in range(chunk)]
            acked.extend(await send_pipelined(client, sends))
            await paced

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return acked


async def test_persist_workers_share_partitions_and_survive_a_kill_during_rebalances(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with (
        gateways(tmp_path, services, pg_url, prefix) as cluster,
        workers(cluster, tmp_path) as start_worker,
        row_counter(pg_url) as count,
    ):
        # Enough rooms that every partition carries some of them.
        rooms, clients = await rooms_and_clients(cluster, 32, 3, "rb")
        first = await start_worker("persist")
        stop = asyncio.Event()
        traffic = asyncio.create_task(keep_sending(clients, rooms, stop))
        try:

            async def writes(worker: WorkerProcess) -> bool:
                assert not traffic.done(), traffic
                return (await worker.sample("parley_persisted_total") or 0) > 0

            await eventually(lambda: writes(first), 30, "the first worker writes")
            second = await start_worker("persist")  # the group rebalances
            await eventually(lambda: writes(second), 40, "the second worker gets partitions")
            assert await first.sample("parley_persisted_total") not in (None, 0)
            await first.kill()  # mid-traffic: its partitions move after its session expires
            before = await count()
            await eventually(
                lambda: _grows(count, before), 30, "writing goes on without the first worker"
            )
            third = await start_worker("persist")
            await eventually(lambda: writes(third), 40, "the third worker gets partitions")
        finally:
            stop.set()
            acked = sorted(await traffic)
        await eventually(lambda: _equals(count, len(acked)), 60, f"{len(acked)} rows")
        assert await stored(pg_url) == acked, "every acked message exactly once, nothing else"
        for worker in (second, third):
            lag_is_zero = functools.partial(_is_zero, worker, "parley_persist_lag")
            await eventually(lag_is_zero, 15, "parley_persist_lag back to 0", 0.5)


async def _grows(count: RowCounter, before: int) -> bool:
    return await count() > before


async def _is_zero(worker: WorkerProcess, metric: str) -> bool:
    return await worker.sample(metric) == 0


# --- notify -----------------------------------------------------------------------------

NOTIFY_SECRET = "webhook-secret-for-the-notify-test"


@dataclass
class Delivery:
    """One POST the webhook receiver took, and what it answered."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload


class Receiver:
    """A webhook endpoint that fails its very first request (500) and takes the rest."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 500 if not self.deliveries else 200
        self.deliveries.append(Delivery(status, dict(request.headers), body))
        async with self._changed:
            self._changed.notify_all()
        return web.Response(status=status)

    def taken(self, user: str | None = None) -> list[Delivery]:
        return [
            d
            for d in self.deliveries
            if d.status == 200 and (user is None or d.payload["user"] == user)
        ]

    async def wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(done), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"not within {timeout} s: {what}; deliveries: {self.deliveries}"
                ) from None


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rx.port).start()
    try:
        yield rx
    finally:
        await runner.cleanup()


def signed(d: Delivery) -> bool:
    expected = "sha256=" + hmac.new(NOTIFY_SECRET.encode(), d.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(d.headers.get("X-Parley-Signature", ""), expected)


async def gateway_metric(cluster: Cluster, name: str) -> float:
    """`name` summed over every gateway's /metrics."""
    total = 0.0
    for i in range(len(cluster.nodes)):
        status, text = await cluster.api("metrics", node=i).call("GET", "/metrics")
        assert status == 200, (status, text)
        total += WorkerProcess.parse_sample(str(text), name) or 0.0
    return total


@pytest.mark.parametrize("where", ["in-serve", "own-process"])
async def test_notify_webhook_reaches_offline_members_once_per_burst(
    where: str, tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with receiver() as rx:
        settings = {
            "PARLEY_WORKERS": "persist,notify" if where == "in-serve" else "persist",
            "PARLEY_NOTIFY_URL": rx.url,
            "PARLEY_NOTIFY_SECRET": NOTIFY_SECRET,
            "PARLEY_NOTIFY_COALESCE": "1",
        }
        async with (
            gateways(tmp_path, services, pg_url, prefix, count=2, **settings) as cluster,
            workers(cluster, tmp_path) as start_worker,
        ):
            worker = await start_worker("notify") if where == "own-process" else None
            await cluster.api("alice").create_room("crew", ["bob", "carol", "dave"])
            alice = await cluster.connect("alice", node=0)
            await cluster.connect("bob", node=1)  # online, on the other node
            # Bob's presence went through the events topic, which the notify worker reads.
            await alice.expect("presence", user="bob", status="online")

            burst = await send_pipelined(alice, [("crew", f"burst {i}") for i in range(3)])
            await rx.wait(
                lambda: len(rx.taken("carol")) == 1 and len(rx.taken("dave")) == 1,
                30,
                "one notification each for carol and dave",
            )
            # A later message on the same partition: once carol and dave have their second
            # notification, every notification of the burst's batch was sent (one worker
            # owns the partition, and handles its batches one after the other).
            (sentinel,) = await send_pipelined(alice, [("crew", "later")])
            await rx.wait(
                lambda: len(rx.taken("carol")) == 2 and len(rx.taken("dave")) == 2,
                30,
                "a second notification each for carol and dave",
            )
            if worker is not None:
                sent = await worker.sample("parley_notifications_total")
            else:
                sent = await gateway_metric(cluster, "parley_notifications_total")

        first, *rest = rx.deliveries
        assert first.status == 500, "the receiver fails the very first request"
        assert all(d.status == 200 for d in rest)
        taken = rx.taken()
        assert {d.payload["user"] for d in taken} == {"carol", "dave"}, (
            "bob is online and alice sent: neither is notified"
        )
        assert len(taken) == 4 and sent == 4, (len(taken), sent)
        assert (first.headers["X-Parley-Delivery"], first.body) in {
            (d.headers["X-Parley-Delivery"], d.body) for d in taken
        }, "the failed request was retried as it was"
        assert len(rest) == 4, "a retry only until the receiver took it"

        expected_burst = [
            {"room": room, "id": mid, "seq": seq, "sender": sender, "body": body}
            for room, seq, mid, sender, _, body in burst
        ]
        for user in ("carol", "dave"):
            coalesced, later = (d.payload for d in rx.taken(user))
            assert coalesced["count"] == 3 and coalesced["rooms"] == {"crew": 3}, coalesced
            assert [
                {k: m[k] for k in ("room", "id", "seq", "sender", "body")}
                for m in coalesced["messages"]
            ] == expected_burst, "the burst, in order"
            assert later["count"] == 1
            assert [m["id"] for m in later["messages"]] == [sentinel[2]]
        for d in taken:
            assert signed(d), ("X-Parley-Signature is HMAC-SHA256 of the raw body", d)
            assert d.headers.get("X-Parley-Delivery") == d.payload["id"]
            assert d.headers.get("Content-Type", "").startswith("application/json")
        assert signed(first)
        assert len({d.headers["X-Parley-Delivery"] for d in taken}) == 4


# --- analytics --------------------------------------------------------------------------


async def counted(db: str, room: str) -> tuple[int, int]:
    """(messages, latency reports) the analytics worker has added up for a room."""
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow(
            "SELECT coalesce(sum(messages), 0), coalesce(sum(lat_count), 0)"
            " FROM room_minutes WHERE room_id = $1",
            room,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


async def forget_offsets(kafka: str, groups: list[str], timeout: float = 40.0) -> None:
    """Delete consumer groups (once their dead members expired): the next run reads from 0."""
    admin = AdminClient({"bootstrap.servers": kafka})
    deadline = time.monotonic() + timeout
    left = list(groups)
    while left:
        futures = admin.delete_consumer_groups(left, request_timeout=10)
        for group, future in futures.items():
            try:
                await asyncio.to_thread(future.result)
                left.remove(group)
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"cannot delete group {group}: {exc}") from None
        if left:
            await asyncio.sleep(0.5)


async def stats(cluster: Cluster, user: str, room: str) -> tuple[int, Any]:
    return await cluster.api(user).call("GET", f"/api/stats?room={room}")


async def test_analytics_counts_once_across_a_kill_and_a_full_reread(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with (
        gateways(tmp_path, services, pg_url, prefix, PARLEY_WORKERS="persist") as cluster,
        workers(cluster, tmp_path) as start_worker,
    ):
        worker = await start_worker("analytics")
        await cluster.api("alice").create_room("st", ["bob"])
        await cluster.api("carol").create_room("elsewhere")
        alice = await cluster.connect("alice")
        bob = await cluster.connect("bob")
        for c in (alice, bob):
            await c.subscribe("st")
        await asyncio.gather(
            send_pipelined(alice, [("st", f"a{i}") for i in range(30)]),
            send_pipelined(bob, [("st", f"b{i}") for i in range(20)]),
        )

        async def shows(messages: int) -> bool:
            status, body = await stats(cluster, "alice", "st")
            assert status == 200, (status, body)
            (room,) = body["rooms"]
            assert room["messages"] <= messages, room
            return bool(
                room["messages"] == messages
                and room["active_users"] == 2
                and room["latency_avg_ms"] is not None
            )

        # Gateways report fan-out latency every 5 s.
        await eventually(lambda: shows(50), 30, "stats: 50 messages, 2 senders, a latency")
        _, body = await stats(cluster, "alice", "st")
        (room,) = body["rooms"]
        assert room["room"] == "st"
        assert sum(m["messages"] for m in room["minutes"]) == 50
        assert room["latency_avg_ms"] >= 0

        metrics = await worker.metrics()
        assert WorkerProcess.parse_sample(metrics, "parley_room_messages_total", 'room="st"') == 50
        assert (
            WorkerProcess.parse_sample(metrics, "parley_cluster_delivery_latency_seconds_count")
            or 0
        ) > 0
        assert WorkerProcess.parse_sample(metrics, "parley_active_users") == 2
        assert WorkerProcess.parse_sample(metrics, "parley_analytics_lag") is not None

        # Only the owner reads a room's stats; to others it is a room like any other.
        status, body = await stats(cluster, "bob", "st")
        assert status == 403, (status, body)
        not_member = await stats(cluster, "carol", "st")
        missing = await stats(cluster, "carol", "no-such-room")
        assert not_member[0] == 404 and not_member == missing
        status, body = await stats(cluster, "carol", "elsewhere")
        assert status == 200 and body["rooms"][0]["messages"] == 0

        # Killed while it counts (the sends go on), then made to read everything again
        # from offset 0: every record it had counted must be refused, not counted twice.
        total = 3050
        more = asyncio.gather(
            send_pipelined(alice, [("st", f"a{i}") for i in range(30, 1530)]),
            send_pipelined(bob, [("st", f"b{i}") for i in range(20, 1520)]),
        )
        began = time.monotonic()
        while (await counted(pg_url, "st"))[0] == 50:
            assert time.monotonic() - began < 30, "the worker counted nothing more"
            await asyncio.sleep(0.01)
        await worker.kill()
        await more
        at_kill, _ = await counted(pg_url, "st")
        groups = [f"{prefix}.analytics", f"{prefix}.analytics-latency"]
        await forget_offsets(services["kafka"], groups)
        await worker.start()

        async def all_counted() -> bool:
            messages, reports = await counted(pg_url, "st")
            assert messages <= total and reports <= total, (messages, reports)
            return messages == total and reports == total

        # One gateway observes each message once: as many latency reports as messages.
        await eventually(all_counted, 40, f"{total} messages and latency reports counted")
        await eventually(lambda: shows(total), 10, f"stats: {total} messages")
        counted_here = await worker.sample("parley_room_messages_total", 'room="st"') or 0
        assert counted_here == total - at_kill, f"{at_kill} were counted before the kill"
        lag_is_zero = functools.partial(_is_zero, worker, "parley_analytics_lag")
        await eventually(lag_is_zero, 15, "parley_analytics_lag back to 0", 0.5)
        assert await counted(pg_url, "st") == (total, total)
        assert await gateway_metric(cluster, "parley_delivery_latency_seconds_count") == total


async def test_analytics_in_serve_answers_stats_for_the_owner(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with gateways(
        tmp_path, services, pg_url, prefix, PARLEY_WORKERS="persist,analytics"
    ) as cluster:
        await cluster.api("alice").create_room("inside", ["bob"])
        alice = await cluster.connect("alice")
        bob = await cluster.connect("bob")
        await asyncio.gather(
            send_pipelined(alice, [("inside", f"a{i}") for i in range(7)]),
            send_pipelined(bob, [("inside", f"b{i}") for i in range(5)]),
        )

        async def shows_all() -> bool:
            status, body = await stats(cluster, "alice", "inside")
            assert status == 200, (status, body)
            (room,) = body["rooms"]
            assert room["messages"] <= 12, room
            return bool(
                room["messages"] == 12
                and room["active_users"] == 2
                and room["latency_avg_ms"] is not None
            )

        await eventually(shows_all, 30, "stats: 12 messages, 2 senders, a latency")
        status, body = await cluster.api("alice").call("GET", "/api/stats")
        assert status == 200 and [r["room"] for r in body["rooms"]] == ["inside"], body
        status, body = await cluster.api("bob").call("GET", "/api/stats")
        assert status == 200 and body["rooms"] == [], "bob owns no room"
        assert (await stats(cluster, "bob", "inside"))[0] == 403
        # A gateway's /metrics is public: no series names a room there.
        assert await gateway_metric(cluster, 'parley_room_messages_total{room="_all"}') == 12
        assert await gateway_metric(cluster, 'parley_room_messages_total{room="inside"}') == 0


async def test_gateway_metrics_name_each_family_once_with_every_worker_inside(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    """The gateway's own families and its workers' share one /metrics: each TYPE line once.

    Prometheus refuses a whole scrape that declares a metric twice.
    """
    async with gateways(
        tmp_path,
        services,
        pg_url,
        prefix,
        PARLEY_WORKERS="persist,notify,analytics",
        PARLEY_NOTIFY_URL="http://127.0.0.1:9/unused",
        PARLEY_NOTIFY_SECRET=NOTIFY_SECRET,
    ) as cluster:
        status, text = await cluster.api("ops").call("GET", "/metrics")
        assert status == 200
        declared = [line.split()[2] for line in str(text).splitlines() if line.startswith("# TYPE")]
        for name in ("parley_persist_lag", "parley_notify_lag", "parley_analytics_lag"):
            assert name in declared
        twice = sorted({name for name in declared if declared.count(name) > 1})
        assert twice == [], f"declared more than once: {twice}"


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("PARLEY_NOTIFY_URL", "PARLEY_NOTIFY_URL"),
        ("PARLEY_NOTIFY_SECRET", "PARLEY_NOTIFY_SECRET"),
        ("PARLEY_KAFKA_BOOTSTRAP", "PARLEY_KAFKA_BOOTSTRAP"),
    ],
)
def test_notify_worker_without_its_settings_stops_with_one_line(
    drop: str, named: str, tmp_path: Path
) -> None:
    env = base_env("unset", "127.0.0.1:9092", f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "data")
    env.update(PARLEY_NOTIFY_URL="http://127.0.0.1:9/hook", PARLEY_NOTIFY_SECRET=NOTIFY_SECRET)
    del env[drop]
    result = subprocess.run(
        [sys.executable, "-m", "parley.cli.main", "worker", "notify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("parley: error:") and named in lines[0], lines
    assert result.stdout == ""


async def test_analytics_counts_a_retry_that_reached_the_log_twice_once(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    """The same send retried on two nodes at once may leave two records in the log.

    History keeps the first (test_cluster); the message counts must agree with it.
    """
    async with (
        gateways(tmp_path, services, pg_url, prefix, count=2, PARLEY_WORKERS="persist") as cluster,
        workers(cluster, tmp_path) as start_worker,
    ):
        worker = await start_worker("analytics")
        await cluster.api("alice").create_room("twice", ["bob"])
        a0 = await cluster.connect("alice", node=0)
        a1 = await cluster.connect("alice", node=1)
        # A first send through each node: both know the room, so the retries race.
        acks = [await a0.send_message("twice", "warm 0"), await a1.send_message("twice", "warm 1")]
        for n in range(20):
            cid = f"dup-{n}"
            await asyncio.gather(
                a0.send(type="send", room="twice", client_id=cid, body=f"b{n}", ref=cid),
                a1.send(type="send", room="twice", client_id=cid, body=f"b{n}", ref=cid),
            )
        for n in range(20):
            x, y = await a0.expect("ack", ref=f"dup-{n}"), await a1.expect("ack", ref=f"dup-{n}")
            assert (x["id"], x["seq"]) == (y["id"], y["seq"])
            acks.append(x)
        # Each node's producer keeps its order: a later send from each node lands after
        # every record that node wrote for the retries.
        last = [await a0.send_message("twice", "last 0"), await a1.send_message("twice", "last 1")]
        acks += last
        duplicates = await gateway_metric(cluster, "parley_duplicate_records_total")
        end = max(int(ack["seq"]) for ack in last) + 1
        source = f"{prefix}.messages@{prefix}.analytics"
        await eventually(lambda: _progress_reaches(pg_url, source, end), 30, "analytics read all")
        _, page = await cluster.api("bob").call("GET", "/api/rooms/twice/messages?limit=100")
        assert [m["id"] for m in page["messages"]] == [a["id"] for a in acks]
        status, body = await stats(cluster, "alice", "twice")
        assert status == 200
        context = (body, f"{duplicates / 2:.0f} duplicate records in the log")
        assert body["rooms"][0]["messages"] == len(acks), context
        assert await worker.sample("parley_room_messages_total", 'room="twice"') == len(acks)


async def _progress_reaches(db: str, source: str, offset: int) -> bool:
    """Whether a worker's own progress (in the store) passed `offset` on some partition."""
    conn = await asyncpg.connect(db)
    try:
        done = await conn.fetchval(
            "SELECT max(next_offset) FROM persist_progress WHERE topic = $1", source
        )
    finally:
        await conn.close()
    return done is not None and int(done) >= offset


PAIRS = 20


async def test_notify_lists_a_retry_that_reached_the_log_twice_once(
    tmp_path: Path, services: dict[str, str], pg_url: str, prefix: str
) -> None:
    async with receiver() as rx:
        settings = {
            "PARLEY_WORKERS": "persist",
            "PARLEY_NOTIFY_URL": rx.url,
            "PARLEY_NOTIFY_SECRET": NOTIFY_SECRET,
            "PARLEY_NOTIFY_COALESCE": "1",
        }
        async with (
            gateways(tmp_path, services, pg_url, prefix, count=2, **settings) as cluster,
            workers(cluster, tmp_path) as start_worker,
        ):
            await start_worker("notify")
            await cluster.api("alice").create_room("again", ["carol"])
            a0 = await cluster.connect("alice", node=0)
            a1 = await cluster.connect("alice", node=1)
            # A first send through each node: both know the room, so the retries race.
            acks = [
                await a0.send_message("again", "warm 0"),
                await a1.send_message("again", "warm 1"),
            ]
            for n in range(PAIRS):
                cid = f"once-{n}"
                await asyncio.gather(
                    a0.send(type="send", room="again", client_id=cid, body=f"hi {n}", ref=cid),
                    a1.send(type="send", room="again", client_id=cid, body=f"hi {n}", ref=cid),
                )
            for n in range(PAIRS):
                x, y = (
                    await a0.expect("ack", ref=f"once-{n}"),
                    await a1.expect("ack", ref=f"once-{n}"),
                )
                assert (x["id"], x["seq"]) == (y["id"], y["seq"])
                acks.append(x)
            # A later message from each node: its notification comes after every earlier one.
            acks.append(await a0.send_message("again", "later 0"))
            acks.append(await a1.send_message("again", "later 1"))
            await rx.wait(
                lambda: any(
                    m["id"] == acks[-1]["id"]
                    for d in rx.taken("carol")
                    for m in d.payload["messages"]
                ),
                30,
                "carol is notified of the last message",
            )
            duplicates = await gateway_metric(cluster, "parley_duplicate_records_total") / 2
        notes = [d.payload for d in rx.taken("carol")]
        acked = {a["id"]: a["seq"] for a in acks}
        listed = [(m["id"], m["seq"]) for note in notes for m in note["messages"]]
        context = (f"{duplicates:.0f} duplicate records in the log", notes)
        assert sum(note["count"] for note in notes) == len(acks), context
        assert all(acked.get(mid) == seq for mid, seq in listed), context
        assert len(set(listed)) == len(listed), context
