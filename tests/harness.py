"""Real Parley nodes in subprocesses, and a WebSocket test client.

Every e2e test drives servers the way the acceptance tests do: through
`parley serve`, PROTOCOL.md frames and REST calls, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from parley.auth.tokens import issue_token

SECRET = "test-secret-for-parley-e2e-tests-0123456789"
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def token(user: str, ttl: int = 3600, secret: str = SECRET) -> str:
    return issue_token(secret, user, ttl)


class ParleyProcess:
    """A `parley` subprocess whose output goes to a log file; stopped or killed by its starter.

    Subclasses say which command it runs, what it adds to the environment and
    which output line means it is ready.
    """

    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None
    _pump: asyncio.Task[None] | None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _own_env(self) -> dict[str, str]:
        raise NotImplementedError

    def _ready_line(self) -> bytes:
        raise NotImplementedError

    def _label(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "parley.cli.main",
            *self._argv(),
            env={**self.env, **self._own_env()},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        ready = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._read_output(ready))
        try:
            await asyncio.wait_for(ready, READY_TIMEOUT_S)
        except BaseException:
            await self.kill()
            raise

    async def _read_output(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        marker = self._ready_line()
        with self.log_path.open("ab") as out:
            async for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if not ready.done() and marker in line:
                    ready.set_result(None)
        if not ready.done():
            ready.set_exception(
                RuntimeError(f"{self._label()} exited: {self.log_path.read_text()[-2000:]}")
            )

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean stop), SIGKILL after `timeout`; the exit code."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._drain()
        return self.proc.returncode

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish or commit anything."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._drain()

    async def _drain(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
            self._pump = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ServerProcess(ParleyProcess):
    """One `parley serve` node."""

    env: dict[str, str]
    node_id: str
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    _pump: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _argv(self) -> list[str]:
        return ["serve"]

    def _own_env(self) -> dict[str, str]:
        return {"PARLEY_PORT": str(self.port), "PARLEY_NODE_ID": self.node_id}

    def _ready_line(self) -> bytes:
        return b"ready on http"

    def _label(self) -> str:
        return f"node {self.node_id}"


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed with {code}")
        self.code = code


class WsClient:
    """A test client that keeps every frame it received, in order."""

    _refs = itertools.count()

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws = ws
        self._session = session
        self.frames: list[dict[str, Any]] = []
        self._cursor = 0
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, server: ServerProcess, user: str, **params: Any) -> WsClient:
        query = {"token": token(user), **{k: str(v) for k, v in params.items()}}
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                server.ws_url, params=query, max_msg_size=0, autoping=True
            )
        except BaseException:
            await session.close()
            raise
        client = cls(ws, session)
        return client

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def send_raw(self, text: str) -> None:
        await self.ws.send_str(text)

    async def _read(self, timeout: float) -> dict[str, Any]:
        msg = await self.ws.receive(timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = orjson.loads(msg.data)
            self.frames.append(frame)
            return frame
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            # The code the server sent: aiohttp's close_code turns into 1006
            # when its automatic close reply finds the connection already gone.
            code = msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code
            self.close_code = code
            raise Closed(code)
        raise AssertionError(f"unexpected frame {msg.type}: {msg.data!r}")

    async def expect(self, type: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next not-yet-consumed frame of this type (and fields), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self._cursor, len(self.frames)):
                f = self.frames[i]
                if (
                    not f.get("_consumed")
                    and f.get("type") == type
                    and all(f.get(k) == v for k, v in match.items())
                ):
                    self.frames[i] = {**f, "_consumed": True}
                    self._skip_consumed()
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no {type} frame matching {match} within {timeout}s;"
                    f" got {self.frames[self._cursor :][-10:]}"
                )
            try:
                await self._read(left)
            except TimeoutError:
                continue

    def _skip_consumed(self) -> None:
        while self._cursor < len(self.frames) and self.frames[self._cursor].get("_consumed"):
            self._cursor += 1

    async def request(
        self, type: str, reply: str, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        ref = f"r{next(self._refs)}"
        await self.send(type=type, ref=ref, **fields)
        return await self.expect(reply, timeout, ref=ref)

    async def error(self, type: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a frame with a ref and return the error that answers it."""
        return await self.request(type, "error", timeout, **fields)

    async def reply(self, ref: str, within: float = 15.0) -> dict[str, Any]:
        """The ack or error answering the frame with this ref (without consuming it)."""
        deadline = time.monotonic() + within
        while True:
            for f in self.frames:
                if f.get("ref") == ref and f.get("type") in ("ack", "error"):
                    return f
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no ack/error for {ref} within {within}s: {self.frames[-10:]}"
                )
            await self.drain(0.05)

    async def page_back(self, room: str, limit: int) -> list[dict[str, Any]]:
        """Every message of a room, walking `history` back page by page, oldest first."""
        seen: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            fields: dict[str, Any] = {"room": room, "limit": limit}
            if before is not None:
                fields["before"] = before
            page = await self.request("history", "history", **fields)
            seen = page["messages"] + seen
            if not page["has_more"]:
                return seen
            before = page["messages"][0]["seq"]

    async def drain(self, seconds: float) -> None:
        """Read whatever arrives for a while (to check that nothing else does)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self._read(left)
            except TimeoutError:
                return

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Closed):
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await self._read(deadline - time.monotonic())
            raise AssertionError("connection not closed")
        return self.close_code

    def messages(self, room: str) -> list[dict[str, Any]]:
        """Every message of a room this client was given: history and live, in order."""
        out: list[dict[str, Any]] = []
        for f in self.frames:
            if f.get("type") == "history" and f.get("room") == room:
                out.extend(f["messages"])
            elif f.get("type") == "message" and f.get("room") == room:
                out.append(f)
        return out

    async def subscribe(self, room: str, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        ref = f"r{next(self._refs)}"
        await self.send(type="subscribe", room=room, ref=ref, **fields)
        sub = await self.expect("subscribed", ref=ref)
        hist = await self.expect("history", ref=ref)
        return sub, hist

    async def send_message(
        self, room: str, body: str, client_id: str | None = None
    ) -> dict[str, Any]:
        client_id = client_id or uuid.uuid4().hex
        return await self.request("send", "ack", room=room, client_id=client_id, body=body)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self._session.close()


class Api:
    """REST calls as one user."""

    def __init__(self, server: ServerProcess, user: str, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.user = user
        self._session = session

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token(self.user)}", **kw.pop("headers", {})}
        async with self._session.request(
            method, self.server.url + path, json=json, headers=headers, **kw
        ) as resp:
            text = await resp.text()
            body = orjson.loads(text) if text and resp.content_type == "application/json" else text
            return resp.status, body

    async def create_room(self, room: str, members: Sequence[str] = ()) -> dict[str, Any]:
        status, body = await self.call("POST", "/api/rooms", {"id": room, "members": list(members)})
        assert status == 201, (status, body)
        result: dict[str, Any] = body
        return result


@dataclass
class Cluster:
    """The nodes of one test: one (embedded) or two (Kafka), sharing a database."""

    backend: str
    nodes: list[ServerProcess]
    http: aiohttp.ClientSession
    clients: list[WsClient] = field(default_factory=list)

    async def connect(self, user: str, node: int = 0, **params: Any) -> WsClient:
        client = await WsClient.connect(self.nodes[node], user, **params)
        self.clients.append(client)
        hello = await client.expect("hello")
        assert hello["user"] == user
        return client

    def api(self, user: str, node: int = 0) -> Api:
        return Api(self.nodes[node], user, self.http)

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        for n in self.nodes:
            await n.stop()
        await self.http.close()


def base_env(prefix: str, kafka: str | None, database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_JWT_SECRET=SECRET,
        PARLEY_TOPIC_PREFIX=prefix,
        PARLEY_DATABASE_URL=database_url,
        PARLEY_DATA_DIR=str(data_dir),
        PARLEY_PARTITIONS="4",
        PARLEY_PRESENCE_TIMEOUT="6",
        # Tests pipeline sends faster than a person types; the rate limit has its own test.
        PARLEY_RATE_LIMIT="2000",
        PARLEY_RATE_BURST="2000",
        # Likewise reconnections: a test may open hundreds of sockets for one user.
        PARLEY_USER_HANDSHAKE_RATE="2000",
        PARLEY_USER_HANDSHAKE_BURST="2000",
        PARLEY_LOG_LEVEL=os.environ.get("PARLEY_TEST_LOG_LEVEL", "INFO"),
    )
    if kafka:
        env["PARLEY_KAFKA_BOOTSTRAP"] = kafka
    return env


@contextlib.asynccontextmanager
async def running(nodes: list[ServerProcess]) -> AsyncIterator[list[ServerProcess]]:
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


@dataclass
class WorkerProcess(ParleyProcess):
    """One `parley worker NAME` process, beside the gateways.

    It gets a free PARLEY_METRICS_PORT of its own, so that several workers of
    one test (and of tests running at the same time) never share one.
    """

    name: str
    env: dict[str, str]
    log_path: Path
    worker_id: str = "w0"
    metrics_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    _pump: asyncio.Task[None] | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _argv(self) -> list[str]:
        return ["worker", self.name]

    def _own_env(self) -> dict[str, str]:
        return {"PARLEY_METRICS_PORT": str(self.metrics_port), "PARLEY_NODE_ID": self.worker_id}

    def _ready_line(self) -> bytes:
        return f"parley: worker {self.name} running".encode()

    def _label(self) -> str:
        return f"worker {self.name} ({self.worker_id})"

    async def metrics(self) -> str:
        """The worker's /metrics text."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.metrics_url, timeout=aiohttp.ClientTimeout(total=10)) as resp,
        ):
            assert resp.status == 200, (resp.status, await resp.text())
            return await resp.text()

    async def sample(self, name: str, labels: str = "") -> float | None:
        """One sample of /metrics (`labels` as written there: `room="r1"`), or None."""
        return self.parse_sample(await self.metrics(), name, labels)

    @staticmethod
    def parse_sample(text: str, name: str, labels: str = "") -> float | None:
        """The value of `name{labels}` in Prometheus text (any /metrics), or None if absent."""
        key = f"{name}{{{labels}}}" if labels else name
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            if series == key:
                return float(value)
        return None
