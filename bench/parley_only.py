"""Scenarios only Parley has: persistence, resume with `since`, history paging.

The peers keep no history: a python-socketio or Channels client that was
disconnected has lost what was sent meanwhile, and there is nothing to page
back through, so these tables have Parley alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.driver import exact_percentiles
from bench.procs import Proc, cpu_seconds, free_port, postmaster_pid
from bench.scenarios import (
    Sizes,
    connect,
    drain,
    errors_of,
    fleet,
    sent_counts,
    set_rate,
    stats,
    total_sent,
    verify,
)
from bench.systems import PARLEY, Env, Parley
from parley.auth.tokens import issue_token
from parley.log.base import partition_for
from parley.log.records import encode_message, messages_topic
from parley.storage.postgres import PostgresStore
from parley.storage.sqlite import SqliteStore

logger = logging.getLogger("bench")
PARTITIONS = 12


# Persistence ------------------------------------------------------------------------


def prefill(kafka: str, prefix: str, count: int, rooms: int, room_prefix: str = "p") -> float:
    """Write `count` messages the way gateways do (encoding, key, partition); seconds taken."""
    topic = messages_topic(prefix)
    admin = AdminClient({"bootstrap.servers": kafka})
    for fut in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        fut.result(30)
    producer = Producer(
        {
            "bootstrap.servers": kafka,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    t0 = time.monotonic()
    now_ms = int(time.time() * 1000)
    body = "persistence benchmark message " + "x" * 70
    for i in range(count):
        room = f"{room_prefix}{i % rooms}" if rooms > 1 else room_prefix
        value = encode_message(f"u{i % 997}", f"c{i}", body, now_ms)
        while True:
            try:
                producer.produce(topic, value, room.encode(), partition_for(room, PARTITIONS))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("prefill: messages left unflushed")
    return time.monotonic() - t0


def sqlite_count(path: str) -> int:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:  # the worker has not created the schema yet
        return 0
    finally:
        conn.close()


async def persist_until(env: Env, prefix: str, db_url: str, n: int) -> dict[str, Any]:
    """Run `parley worker persist` on a pre-filled topic until the store holds n messages."""
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    worker_env.update(
        PARLEY_JWT_SECRET=env.secret,
        PARLEY_KAFKA_BOOTSTRAP=env.kafka,
        PARLEY_DATABASE_URL=db_url,
        PARLEY_TOPIC_PREFIX=prefix,
        PARLEY_LOG_LEVEL="WARNING",
        # Not the default 9101: another worker (a test's, another run's) may hold it.
        PARLEY_METRICS_PORT=str(free_port()),
    )
    worker = Proc(
        name="persist",
        argv=[str(PARLEY), "worker", "persist"],
        env=worker_env,
        log_path=env.run_dir / f"{prefix}-worker.log",
        ready_line="worker persist running",
    )
    pg = None
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")

        async def count() -> int:
            return await asyncio.to_thread(sqlite_count, path)

    else:
        pg = await asyncpg.connect(db_url)

        async def count() -> int:
            assert pg is not None
            try:
                return int(await pg.fetchval("SELECT count(*) FROM messages"))
            except asyncpg.UndefinedTableError:
                return 0

    groups: dict[str, list[int]] = {"worker": [], "brokers": env.kafka_pids() + postmaster_pid()}
    samples: list[tuple[float, int]] = []
    try:
        await worker.start()
        groups["worker"] = [worker.pid]
        cpu0 = cpu_seconds(groups)
        t_ready = time.monotonic()
        got = 0
        deadline = t_ready + max(120.0, n / 1000)
        while got < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            got = await count()
            samples.append((time.monotonic() - t_ready, got))
        t_done = time.monotonic()
        cpu1 = cpu_seconds(groups)
    finally:
        await worker.stop()
        if pg is not None:
            await pg.close()
    cpu = {g: cpu1[g] - cpu0[g] for g in cpu0}
    # The steady rate: from the first sample past 10 % to the first past 90 % of n,
    # which leaves out the consumer group's join and the last partial batch.
    t10 = next((t for t, c in samples if c >= 0.1 * n), None)
    t90 = next((t for t, c in samples if c >= 0.9 * n), None)
    steady = 0.8 * n / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else None
    total = t_done - t_ready
    return {
        "stored": got,
        "seconds_from_ready": total,
        "messages_per_s_overall": got / total if total > 0 else None,
        "messages_per_s": steady if steady is not None else (got / total if total else None),
        "worker_cpu_us_per_message": cpu["worker"] / got * 1e6 if got else None,
        "system_cpu_us_per_message": (
            (cpu["worker"] + cpu["brokers"]) / got * 1e6 if got else None
        ),
        "samples": samples[:: max(1, len(samples) // 200)],
    }


async def persist(env: Env, db_url: str, sz: Sizes) -> dict[str, Any]:
    prefix = f"bench-persist-{uuid.uuid4().hex[:8]}"
    env.topic_prefixes.append(prefix)
    n = sz.persist_msgs
    fill_s = await asyncio.to_thread(prefill, env.kafka, prefix, n, 1000)
    res = await persist_until(env, prefix, db_url, n)
    conn = await asyncpg.connect(db_url)
    try:
        rooms = await conn.fetchval("SELECT count(DISTINCT room_id) FROM messages")
    finally:
        await conn.close()
    return {
        "messages": n,
        "rooms": rooms,
        "prefill_seconds": fill_s,
        **res,
        "ok": res["stored"] == n,
    }


# Resume storm -------------------------------------------------------------------------


async def resume(system: Parley, sz: Sizes) -> dict[str, Any]:
    """Receivers on node A, one sender per room on node B; A restarts; all resume at once."""
    per_room = 20
    nrooms = max(1, sz.resume_clients // per_room)
    receivers = nrooms * per_room
    await system.start(2)
    f = fleet(system, max(2, min(4, receivers // 1000)))
    try:
        rooms: dict[str, list[str]] = {}
        specs: list[list[Any]] = []
        room_senders: dict[str, list[int]] = {}
        port_a, port_b = system.ports
        for r in range(nrooms):
            room = f"res{r}"
            users = [f"s{r}"] + [f"v{r}-{j}" for j in range(per_room)]
            rooms[room] = users
            sender_idx = receivers + r
            room_senders[room] = [sender_idx]
            specs.append([sender_idx, users[0], room, port_b])
            for j in range(per_room):
                specs.append([r * per_room + j, users[1 + j], room, port_a])
        await system.setup_rooms(rooms)
        await f.start()
        await f.all("configured", cmd="config", room_senders=room_senders)
        conn = await connect(f, specs, 200, wait_s=300)
        if conn["failed"]:
            raise RuntimeError(f"resume: {conn['failed']} connections failed: {conn['errors']}")
        senders = [receivers + r for r in range(nrooms)]
        members = per_room + 1
        msgs = sz.resume_msgs
        rate = 4.0
        expected = 0

        async def phase(step: int) -> None:
            nonlocal expected
            await set_rate(f, senders, rate, step)
            await asyncio.sleep(msgs / rate - 0.1)
            await set_rate(f, senders, 0.0, step)

        await phase(0)
        steps, _ = await sent_counts(f)
        expected = sum(total_sent(steps).values()) * members
        await drain(f, expected)
        # Node A goes away; its clients see 1001. The rooms go on without them.
        t_stop = time.monotonic()
        await system.nodes[0].stop()
        await phase(1)
        await system.nodes[0].start()
        t_ready = time.monotonic()
        restart_s = t_ready - t_stop
        cpu0 = cpu_seconds({"servers": system.server_pids, "brokers": system.brokers()})
        res = await f.all("reconnected", 600, cmd="reconnect", concurrency=5000, timeout=300)
        cpu1 = cpu_seconds({"servers": system.server_pids, "brokers": system.brokers()})
        t_cmd = min(r["t0"] for r in res)
        lasts = [r["t_last"] for r in res if r["t_last"] is not None]
        reconnected = sum(r["ok"] for r in res)
        storm_s = max(lasts) - t_cmd if lasts else None
        await phase(2)
        steps, _ = await sent_counts(f)
        sent = total_sent(steps)
        await drain(f, sum(sent.values()) * members)
        st = await stats(f)
        check = await verify(f, sent)
        resumed = sum(s["resumed"] for s in st)
        return {
            "clients": receivers,
            "rooms": nrooms,
            "messages_per_room": sum(sent.values()) // max(1, nrooms),
            "missed_while_down_per_client": sum(steps.get(1, {}).values()) // max(1, nrooms),
            "node_restart_seconds": restart_s,
            "reconnected": reconnected,
            "resumed": resumed,
            "storm_seconds": storm_s,
            "storm_cpu_s": {g: cpu1[g] - cpu0[g] for g in cpu0},
            "check": check,
            "errors": errors_of(st),
            "ok": check["lost"] == 0
            and check["dups"] == 0
            and check["foreign"] == 0
            and resumed == receivers,
        }
    finally:
        await f.stop()
        await system.stop()


# History paging --------------------------------------------------------------------------


async def history(env: Env, backend: str, db_url: str, sz: Sizes) -> dict[str, Any]:
    """One room of n messages, written as gateways and the worker write them (Kafka,
    then `parley worker persist` into the store), paged back with `history before=`
    through a node, 50 a page, timing each page at the client."""
    n = sz.history_msgs
    prefix = f"bench-hist-{uuid.uuid4().hex[:8]}"
    env.topic_prefixes.append(prefix)
    data = env.run_dir / prefix
    data.mkdir(parents=True)
    if backend == "sqlite":
        db_url = f"sqlite:///{data / 'parley.db'}"
        store: SqliteStore | PostgresStore = SqliteStore(data / "parley.db")
    else:
        store = PostgresStore(db_url)
    t0 = time.monotonic()
    await asyncio.to_thread(prefill, env.kafka, prefix, n, 1, "hist")
    await store.start()  # the schema, and the room with its one member
    try:
        await store.create_room("hist", "History", "h0", [])
    finally:
        await store.stop()
    stored = await persist_until(env, prefix, db_url, n)
    fill_s = time.monotonic() - t0
    node_env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    node_env.update(
        PARLEY_JWT_SECRET=env.secret,
        PARLEY_KAFKA_BOOTSTRAP=env.kafka,
        PARLEY_TOPIC_PREFIX=prefix,
        PARLEY_DATABASE_URL=db_url,
        PARLEY_DATA_DIR=str(data),
        PARLEY_LOG_LEVEL="WARNING",
        PARLEY_WORKERS="",
    )
    port = free_port()
    node = Proc(
        name=f"hist-{backend}",
        argv=[str(PARLEY), "serve", "--port", str(port), "--node-id", f"hist-{backend}"],
        env=node_env,
        log_path=data / "node.log",
        ready_line="ready on http",
        port=port,
    )
    await node.start()
    times: list[float] = []
    seqs: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{port}/ws?token={issue_token(env.secret, 'h0', 3600)}"
            async with http.ws_connect(url, max_msg_size=0) as ws:
                hello = orjson.loads((await ws.receive(10)).data)
                assert hello["type"] == "hello", hello
                before: int | None = None
                ref = 0
                while True:
                    frame: dict[str, Any] = {
                        "type": "history",
                        "room": "hist",
                        "limit": 50,
                        "ref": str(ref),
                    }
                    if before is not None:
                        frame["before"] = before
                    t0 = time.perf_counter()
                    await ws.send_str(orjson.dumps(frame).decode())
                    while True:
                        reply = orjson.loads((await ws.receive(30)).data)
                        if reply.get("ref") == str(ref):
                            break
                    times.append((time.perf_counter() - t0) * 1000)
                    ref += 1
                    if reply["type"] != "history":
                        raise RuntimeError(f"history: {reply}")
                    page = [m["seq"] for m in reply["messages"]]
                    seqs.extend(reversed(page))
                    if not reply["has_more"] or not page:
                        break
                    before = page[0]
    finally:
        await node.stop()
    p50, p99, mx = exact_percentiles(times, [50, 99, 100])
    complete = sorted(seqs) == list(range(n))
    return {
        "backend": backend,
        "messages": n,
        "stored": stored["stored"],
        "pages": len(times),
        "fill_seconds": fill_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": mx,
        "complete": complete,
        "ok": complete and len(seqs) == n,
    }
