"""What the fault tests break: the three-broker cluster, a private PostgreSQL, the nodes.

- `KafkaCluster` drives scripts/kafka-cluster.sh (three KRaft nodes, RF 3,
  min ISR 2): kill a broker, restart it, stop or start them all, and ask the
  cluster who leads each partition. It is a private instance of the script's
  cluster (its own state directory and free ports), not the shared one on
  19092-19094: these tests kill brokers, and other test runs stop the shared
  cluster when they finish (which once cut a fault test's Kafka mid-run).
- `PrivatePostgres` is a PostgreSQL of its own (Debian's binaries, a data dir
  under /tmp, a free port), because the outage test stops the server and the
  shared one on 5432 serves other tests and engineers.
- `deployment()` starts what a production site runs: two `parley serve`
  gateways with no in-process worker and one `parley worker persist` process,
  so that each can be killed on its own.

bench/soak.py uses the same pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.harness import Api, ServerProcess, WorkerProcess, base_env, free_port

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = ROOT / "scripts" / "kafka-cluster.sh"
BOOTSTRAP_PREFIX = "PARLEY_KAFKA_BOOTSTRAP="


class InfraError(Exception):
    """A script or server of the test infrastructure failed (not Parley)."""


async def _run(
    args: Sequence[str],
    timeout: float,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command; its stdout, or InfraError with its output."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise InfraError(f"{' '.join(args)} took over {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise InfraError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{err.decode()[-3000:]}\n"
            f"{out.decode()[-1000:]}"
        )
    return out.decode()


def _run_sync(
    args: Sequence[str],
    timeout: float,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    proc = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    if proc.returncode != 0:
        raise InfraError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}\n"
            f"{proc.stdout[-1000:]}"
        )
    return proc.stdout


# Kafka ----------------------------------------------------------------------------


def _free_ports(count: int, avoid: set[int]) -> int:
    """A base port such that base .. base+count-1 are free on 127.0.0.1 (and not in `avoid`)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32000)
        wanted = set(range(base, base + count))
        if wanted & avoid:
            continue
        try:
            for port in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise InfraError(f"no {count} consecutive free ports")


class KafkaCluster:
    """A private three-node cluster of scripts/kafka-cluster.sh (node N is broker id N)."""

    NODES = (1, 2, 3)

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="parley-faults-kafka-"))
        brokers = _free_ports(3, set())
        controllers = _free_ports(3, set(range(brokers, brokers + 3)))
        self.env = {
            **os.environ,
            "PARLEY_SERVICES_DIR": str(self.state),
            "PARLEY_CLUSTER_BROKER_PORT_BASE": str(brokers),
            "PARLEY_CLUSTER_CONTROLLER_PORT_BASE": str(controllers),
        }
        self.bootstrap = ""
        self._admin: Any = None

    @staticmethod
    def _bootstrap_of(stdout: str) -> str:
        lines = stdout.strip().splitlines()
        if not lines or not lines[-1].startswith(BOOTSTRAP_PREFIX):
            raise InfraError(f"kafka-cluster.sh printed no bootstrap line: {stdout[-500:]!r}")
        return lines[-1].removeprefix(BOOTSTRAP_PREFIX)

    def _script(self, *args: str) -> list[str]:
        return [str(CLUSTER_SCRIPT), *args]

    def start_sync(self) -> str:
        """Start (or reuse) all three nodes; for session fixtures, outside any loop."""
        out = _run_sync(self._script("start"), 300, env=self.env)
        self.bootstrap = self._bootstrap_of(out)
        return self.bootstrap

    def stop_sync(self) -> None:
        """Stop every node and delete the cluster's state."""
        try:
            _run_sync(self._script("stop"), 120, env=self.env)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    async def start(self) -> None:
        """Start whatever is not running and wait until all three brokers serve."""
        out = await _run(self._script("start"), 300, env=self.env)
        self.bootstrap = self._bootstrap_of(out)

    async def kill(self, node: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        await _run(self._script("kill", str(node)), 60, env=self.env)

    async def kill_all(self) -> None:
        for node in self.NODES:
            await self.kill(node)

    async def restart(self, node: int) -> None:
        """Start a node again and wait until all three serve."""
        await _run(self._script("restart", str(node)), 300, env=self.env)

    def _admin_client(self) -> Any:
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        return self._admin

    def _leaders(self, topic: str) -> dict[int, int]:
        md = self._admin_client().list_topics(topic=topic, timeout=5)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise InfraError(f"no metadata for {topic}: {meta!r}")
        return {p: part.leader for p, part in meta.partitions.items()}

    async def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader broker id (-1: none), as the cluster answers now."""
        return await asyncio.to_thread(self._leaders, topic)

    async def wait_leaders(
        self, topic: str, avoid: int, timeout: float = 60.0
    ) -> tuple[dict[int, int], float]:
        """Poll until every partition has a live leader other than `avoid`; (leaders, seconds)."""
        began = time.monotonic()
        last: dict[int, int] | str = {}
        while time.monotonic() - began < timeout:
            try:
                last = await self.leaders(topic)
            except (KafkaException, InfraError) as exc:
                last = str(exc)
            if isinstance(last, dict) and all(b not in (-1, avoid) for b in last.values()):
                return last, time.monotonic() - began
            await asyncio.sleep(0.2)
        raise AssertionError(f"leaders of {topic} did not move off broker {avoid}: {last}")


# PostgreSQL -----------------------------------------------------------------------


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise InfraError("no PostgreSQL under /usr/lib/postgresql (make services installs it)")
    return found[-1].parent


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the fault tests only, stopped and started at will.

    Trust authentication on 127.0.0.1 (and a private unix socket): it lives for
    one test session, serves no one else, and is deleted afterwards.
    """

    base: Path
    port: int = field(default_factory=free_port)
    bin: Path = field(default_factory=_pg_bin)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def _as_postgres(cmd: Sequence[str]) -> list[str]:
        # initdb and postgres refuse to run as root: as root, become the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    @classmethod
    def create(cls) -> PrivatePostgres:
        """initdb a new cluster in a fresh directory the postgres user owns."""
        base = Path(tempfile.mkdtemp(prefix="parley-faults-pg-"))
        pg = cls(base)
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        _run_sync(
            pg._as_postgres(
                [
                    str(pg.bin / "initdb"),
                    "-D",
                    str(pg.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                ]
            ),
            120,
            cwd="/",
        )
        (pg.base / "run").mkdir()
        if os.geteuid() == 0:
            shutil.chown(pg.base / "run", "postgres", "postgres")
        with (pg.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {pg.port}\n"
                f"unix_socket_directories = '{pg.base / 'run'}'\nmax_connections = 200\n"
            )
        return pg

    def _ctl(self, *args: str) -> list[str]:
        return self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "pg.log"), *args]
        )

    def start_sync(self) -> None:
        _run_sync(self._ctl("-w", "-t", "60", "start"), 90, cwd="/")

    def stop_sync(self) -> None:
        if self.running_sync():
            _run_sync(self._ctl("-m", "fast", "-w", "-t", "60", "stop"), 90, cwd="/")

    def running_sync(self) -> bool:
        cmd = self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"])
        return subprocess.run(cmd, capture_output=True, check=False, cwd="/").returncode == 0

    async def start(self) -> None:
        await _run(self._ctl("-w", "-t", "60", "start"), 90, cwd="/")

    async def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a database outage."""
        await _run(self._ctl("-m", "fast", "-w", "-t", "60", "stop"), 90, cwd="/")

    def remove(self) -> None:
        self.stop_sync()
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        path = self.base / "pg.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# The nodes ------------------------------------------------------------------------

# Sends wait for Kafka at most this long before `error internal` (default 15 s):
# the Kafka outage test wants the errors within its 30 s.
KAFKA_TIMEOUT_MS = "5000"


@dataclass
class Deployment:
    """Two gateways and a persistence worker on one prefix, Kafka and database."""

    gateways: list[ServerProcess]
    worker: WorkerProcess
    database_url: str
    prefix: str
    http: aiohttp.ClientSession

    async def readyz(self, node: int) -> tuple[int, dict[str, Any]]:
        """/readyz of a gateway: (status, body); (0, {}) when it does not answer."""
        url = f"{self.gateways[node].url}/readyz"
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                body: dict[str, Any] = orjson.loads(await resp.read())
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return 0, {}

    async def create_rooms(self, members: Mapping[str, Sequence[str]]) -> None:
        """Create each room (owner: its first member) through the REST API."""
        for room, users in members.items():
            await Api(self.gateways[0], users[0], self.http).create_room(room, users[1:])

    def logs(self) -> dict[str, str]:
        out = {g.node_id: g.output() for g in self.gateways}
        out[f"worker-{self.worker.worker_id}"] = self.worker.output()
        return out


def gateway_env(
    prefix: str, kafka: str, database_url: str, data_dir: Path, **settings: str
) -> dict[str, str]:
    env = base_env(prefix, kafka, database_url, data_dir)
    env.update(
        PARLEY_WORKERS="",  # persistence runs as its own process, to be killed alone
        PARLEY_PARTITIONS="6",  # two leaders per broker
        PARLEY_KAFKA_TIMEOUT_MS=KAFKA_TIMEOUT_MS,
        PARLEY_DRAIN_TIMEOUT="10",
    )
    env.update(settings)
    return env


@contextlib.asynccontextmanager
async def deployment(
    workdir: Path, kafka: str, database_url: str, prefix: str, **settings: str
) -> AsyncIterator[Deployment]:
    """Start two gateways and a persist worker; stop (or find dead) all of them at the end."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)  # for their logs
    env = gateway_env(prefix, kafka, database_url, workdir / "data", **settings)
    gateways = [
        ServerProcess(env=dict(env), node_id=f"gw{i}", log_path=workdir / f"gateway{i}.log")
        for i in range(2)
    ]
    worker = WorkerProcess("persist", dict(env), workdir / "worker-persist.log", worker_id="p0")
    http = aiohttp.ClientSession()
    dep = Deployment(gateways, worker, database_url, prefix, http)
    try:
        # One first: it creates the topics, so the other does not race it.
        await gateways[0].start()
        await asyncio.gather(gateways[1].start(), worker.start())
        yield dep
    finally:
        procs: list[ServerProcess | WorkerProcess] = [*gateways, worker]
        try:
            for proc in procs:
                await proc.stop()
        finally:
            # An interrupted stop (a test timeout) must not leave processes behind.
            for proc in procs:
                await proc.kill()
            await http.close()
