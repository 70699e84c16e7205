"""The systems under test: how each is started, configured and measured.

Every system runs as N server processes on ports of 127.0.0.1 and is measured
with its broker (Kafka, Redis, PostgreSQL), whose CPU counts towards its cost.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.procs import Proc, find_pids, free_port, postmaster_pid

ROOT = Path(__file__).resolve().parent.parent
PARLEY = ROOT / ".venv" / "bin" / "parley"


@dataclass
class Env:
    """What every system may use: the services and where to write."""

    bench_python: Path
    secret: str
    kafka: str
    database_url: str  # an admin URL; Parley gets a fresh database per run
    redis_url: str | None
    redis_pid: int | None
    run_dir: Path
    topic_prefixes: list[str] = field(default_factory=list)  # deleted after the run

    def kafka_pids(self) -> list[int]:
        port = self.kafka.rsplit(":", 1)[-1]
        pidfile = (
            Path(os.environ.get("PARLEY_SERVICES_DIR", Path.home() / ".cache/parley/services"))
            / f"kafka-{port}"
            / "kafka.pid"
        )
        try:
            return [int(pidfile.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return find_pids("kafka.Kafka")


@dataclass
class System:
    name: str
    dialect: str
    title: str
    config: str
    env: Env
    nodes: list[Proc] = field(default_factory=list)
    tag: str = ""

    def brokers(self) -> list[int]:
        raise NotImplementedError

    def broker_names(self) -> str:
        raise NotImplementedError

    def make_node(self, i: int) -> Proc:
        raise NotImplementedError

    @property
    def ports(self) -> list[int]:
        return [n.port or 0 for n in self.nodes]

    @property
    def server_pids(self) -> list[int]:
        return [n.pid for n in self.nodes if n.proc is not None and n.proc.returncode is None]

    def peer_proc(self, label: str, i: int, port: int, argv: list[str], **env: str) -> Proc:
        """A peer's server process: its JWT secret and settings in the environment."""
        return Proc(
            name=f"{label}-{i}",
            argv=argv,
            env={**os.environ, "BENCH_JWT_SECRET": self.env.secret, **env},
            log_path=self.env.run_dir / f"{label}-{self.tag}-{i}.log",
            port=port,
        )

    async def start(self, count: int) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.nodes = [self.make_node(i) for i in range(count)]
        await asyncio.gather(*(n.start() for n in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes))
        self.nodes = []

    async def setup_rooms(self, rooms: dict[str, list[str]]) -> None:
        """Peers keep no rooms: joining is the membership."""

    async def restart(self, i: int) -> tuple[float, float]:
        """Stop node i and start it again; (seconds stopped → ready, time it was ready)."""
        node = self.nodes[i]
        await node.stop()
        t0 = asyncio.get_running_loop().time()
        await node.start()
        return asyncio.get_running_loop().time() - t0, node.ready_at


class Parley(System):
    """`.venv/bin/parley serve` nodes on Kafka + PostgreSQL (fresh database per run)."""

    def __init__(self, env: Env, database_url: str) -> None:
        super().__init__(
            "parley",
            "parley",
            "Parley",
            "`parley serve` nodes (aiohttp on uvloop, the default PARLEY_EVENT_LOOP) on"
            " Kafka + PostgreSQL; PARLEY_WORKERS=persist (the default: each node also"
            " runs the persistence worker); PARLEY_RATE_LIMIT/PARLEY_RATE_BURST (per-user"
            " sends) and"
            " PARLEY_HANDSHAKE_RATE/PARLEY_HANDSHAKE_BURST (per-address handshakes) raised"
            " so that the load, not a limit meant for abuse, is measured; everything else"
            " default"
            " (12 partitions, acks=all idempotent producer). The Kafka broker is the one"
            " `scripts/services.sh` starts, shared with python-socketio + Kafka: KRaft,"
            " one node, 1 GiB heap, ZGC.",
            env,
        )
        self.database_url = database_url
        self.prefix = ""
        self.http: aiohttp.ClientSession | None = None

    def brokers(self) -> list[int]:
        return self.env.kafka_pids() + postmaster_pid()

    def broker_names(self) -> str:
        return "Kafka + PostgreSQL"

    def node_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_JWT_SECRET=self.env.secret,
            PARLEY_KAFKA_BOOTSTRAP=self.env.kafka,
            PARLEY_DATABASE_URL=self.database_url,
            PARLEY_TOPIC_PREFIX=self.prefix,
            PARLEY_RATE_LIMIT="100000",
            PARLEY_RATE_BURST="100000",
            # The load generator is a few processes on a few loopback addresses standing
            # for thousands of clients: the per-address handshake limit (50/s, burst 200)
            # is raised like the per-user send limit.
            PARLEY_HANDSHAKE_RATE="1000000",
            PARLEY_HANDSHAKE_BURST="1000000",
            PARLEY_LOG_LEVEL="WARNING",
            PARLEY_DATA_DIR=str(self.env.run_dir / f"parley-data-{self.prefix}"),
        )
        return env

    async def start(self, count: int) -> None:
        self.prefix = f"bench-{uuid.uuid4().hex[:10]}"
        self.env.topic_prefixes.append(self.prefix)
        self.nodes = [self.make_node(i) for i in range(count)]
        await asyncio.gather(*(n.start() for n in self.nodes))
        self.http = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        await super().stop()

    def make_node(self, i: int) -> Proc:
        port = free_port()
        node_id = f"{self.prefix}-{chr(97 + i)}"
        return Proc(
            name=node_id,
            argv=[str(PARLEY), "serve", "--port", str(port), "--node-id", node_id],
            env=self.node_env(),
            log_path=self.env.run_dir / f"{node_id}.log",
            ready_line="ready on http",
            port=port,
        )

    async def setup_rooms(self, rooms: dict[str, list[str]]) -> None:
        """Create each room through the REST API, its first member as owner."""
        from parley.auth.tokens import issue_token

        assert self.http is not None
        url = f"http://127.0.0.1:{self.ports[0]}/api/rooms"
        sem = asyncio.Semaphore(8)

        async def one(room: str, members: Sequence[str]) -> None:
            headers = {"Authorization": f"Bearer {issue_token(self.env.secret, members[0], 3600)}"}
            body = {"id": room, "members": list(members[1:])}
            async with sem:
                assert self.http is not None
                async with self.http.post(url, json=body, headers=headers) as resp:
                    if resp.status != 201:
                        raise RuntimeError(f"create room {room}: {resp.status} {await resp.text()}")

        await asyncio.gather(*(one(r, m) for r, m in rooms.items()))


class SioRedis(System):
    def __init__(self, env: Env) -> None:
        super().__init__(
            "socketio-redis",
            "socketio",
            "python-socketio + Redis",
            "`socketio.AsyncServer(async_mode='aiohttp',"
            " client_manager=socketio.AsyncRedisManager(url))` attached to an aiohttp app,"
            " `web.run_app` on uvloop, one process per port; auth = JWT in the Socket.IO"
            " connect packet's `auth`; join = `enter_room`; broadcast ="
            " `emit('message', …, room=room)`; Debian's redis-server (persistence off).",
            env,
        )

    def brokers(self) -> list[int]:
        return [self.env.redis_pid] if self.env.redis_pid else []

    def broker_names(self) -> str:
        return "Redis"

    def make_node(self, i: int) -> Proc:
        port = free_port()
        assert self.env.redis_url is not None
        argv = [
            str(self.env.bench_python),
            str(ROOT / "bench/peers/sio_redis.py"),
            "--port",
            str(port),
            "--redis",
            self.env.redis_url,
            "--channel",
            f"bench-{self.tag}",
        ]
        return self.peer_proc("sio-redis", i, port, argv)


class SioKafka(System):
    def __init__(self, env: Env) -> None:
        super().__init__(
            "socketio-kafka",
            "socketio",
            "python-socketio + Kafka",
            "`socketio.Server(async_mode='gevent', client_manager=socketio.KafkaManager(url,"
            " channel=topic))` (KafkaManager exists only for the synchronous server), run as"
            " the docs deploy it: `gunicorn -k gevent -w 1` per process"
            " (`--worker-connections 30000`, as the default 1,000 caps the idle test),"
            " WebSocket through simple-websocket; kafka-python; the same Kafka broker as"
            " Parley.",
            env,
        )

    def brokers(self) -> list[int]:
        return self.env.kafka_pids()

    def broker_names(self) -> str:
        return "Kafka"

    def make_node(self, i: int) -> Proc:
        port = free_port()
        gunicorn = self.env.bench_python.parent / "gunicorn"
        return self.peer_proc(
            "sio-kafka",
            i,
            port,
            [
                str(gunicorn),
                "-k",
                "gevent",
                "-w",
                "1",
                "--worker-connections",
                "30000",
                "--backlog",
                "4096",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "--chdir",
                str(ROOT / "bench/peers"),
                "sio_kafka:app",
            ],
            SIO_KAFKA=self.env.kafka,
            SIO_CHANNEL=f"bench-sio-{self.tag}",
        )

    async def start(self, count: int) -> None:
        await super().start(count)
        self.env.topic_prefixes.append(f"bench-sio-{self.tag}")
        # KafkaManager's consumer starts at the topic's end once its partitions
        # are assigned; give it that moment before the first broadcast.
        await asyncio.sleep(2)


class Channels(System):
    def __init__(self, env: Env) -> None:
        super().__init__(
            "channels",
            "channels",
            "Django Channels + Redis",
            "Django 5.2 + Channels `AsyncWebsocketConsumer` under uvicorn (`--loop uvloop"
            " --http httptools`, default WebSocket implementation, access log off,"
            " DEBUG=False), `AllowedHostsOriginValidator`; channel layer"
            " `channels_redis.core.RedisChannelLayer` (defaults: capacity 100, expiry 60 s);"
            " auth = JWT in the query string; join = `group_add`; broadcast ="
            " `group_send`; one uvicorn process per port on the same Redis.",
            env,
        )

    def brokers(self) -> list[int]:
        return [self.env.redis_pid] if self.env.redis_pid else []

    def broker_names(self) -> str:
        return "Redis"

    def make_node(self, i: int) -> Proc:
        port = free_port()
        assert self.env.redis_url is not None
        return self.peer_proc(
            "channels",
            i,
            port,
            [
                str(self.env.bench_python),
                "-m",
                "uvicorn",
                "asgi:application",
                "--app-dir",
                str(ROOT / "bench/peers/channels_chat"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--backlog",
                "4096",
            ],
            REDIS_URL=self.env.redis_url,
            CHANNELS_PREFIX=f"bench-{self.tag}",
        )


PEERS = ("socketio-kafka", "socketio-redis", "channels")
ALL = ("parley", *PEERS)
