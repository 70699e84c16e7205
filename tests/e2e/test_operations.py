"""Running Parley: the CLI, settings, workers as processes, slow readers, restarts."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _cluster, pg_database
from tests.harness import SECRET, Cluster, ServerProcess, base_env, free_port, token


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({}, "PARLEY_JWT_SECRET"),
        ({"PARLEY_JWT_SECRET": "s", "PARLEY_PORT": "eighty"}, "PARLEY_PORT"),
        ({"PARLEY_JWT_SECRET": "s", "PARLEY_DATABASE_URL": "mysql://x"}, "PARLEY_DATABASE_URL"),
        ({"PARLEY_JWT_SECRET": "s", "PARLEY_WORKERS": "persist,bogus"}, "PARLEY_WORKERS"),
        ({"PARLEY_JWT_SECRET": "s", "PARLEY_JWT_ALGORITHMS": "none"}, "PARLEY_JWT_ALGORITHMS"),
        ({"PARLEY_JWT_ALGORITHMS": "RS256"}, "PARLEY_JWT_PUBLIC_KEY"),
        ({"PARLEY_JWT_SECRET": "s", "PARLEY_RATE_LIMIT": "-3"}, "PARLEY_RATE_LIMIT"),
    ],
)
def test_a_wrong_setting_stops_start_up_with_one_line(
    settings: dict[str, str], named: str, tmp_path: Path
) -> None:
    result = run_cli("serve", env=clean_env(PARLEY_DATA_DIR=str(tmp_path), **settings))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0] and lines[0].startswith("parley: error:")
    assert "Traceback" not in result.stderr


def test_unreachable_kafka_and_database_are_named(tmp_path: Path) -> None:
    base = clean_env(PARLEY_JWT_SECRET="s", PARLEY_DATA_DIR=str(tmp_path), PARLEY_PORT="0")
    kafka = run_cli("serve", env={**base, "PARLEY_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    assert kafka.returncode == 2 and "PARLEY_KAFKA_BOOTSTRAP" in kafka.stderr
    assert "Traceback" not in kafka.stderr
    db = run_cli(
        "serve", env={**base, "PARLEY_DATABASE_URL": "postgresql://nobody:x@127.0.0.1:1/none"}
    )
    assert db.returncode == 2 and "PARLEY_DATABASE_URL" in db.stderr
    assert "Traceback" not in db.stderr


def test_token_command_prints_a_token_for_the_configured_secret() -> None:
    from parley.auth.tokens import TokenVerifier, VerifierConfig

    result = run_cli("token", "carol", "--ttl", "60", env=clean_env(PARLEY_JWT_SECRET=SECRET))
    assert result.returncode == 0
    identity = TokenVerifier(VerifierConfig(("HS256",), secret=SECRET)).verify(
        result.stdout.strip()
    )
    assert identity.user == "carol"
    missing = run_cli("token", "carol", env=clean_env())
    assert missing.returncode == 2 and "PARLEY_JWT_SECRET" in missing.stderr


async def test_persist_worker_as_its_own_process(tmp_path: Path, services: dict[str, str]) -> None:
    """`PARLEY_WORKERS=` runs no worker in the node; `parley worker persist` fills history."""
    async with pg_database(services["db"]) as db:
        cluster = await _cluster("kafka", 1, tmp_path, services["kafka"], db)
        try:
            node = cluster.nodes[0]
            node.env.update(PARLEY_WORKERS="", PARLEY_ROOM_WINDOW="3")
            await node.restart()
            await cluster.api("alice").create_room("solo", ["bob"])
            alice = await cluster.connect("alice")
            acks = [await alice.send_message("solo", f"w{n}") for n in range(10)]
            await asyncio.sleep(1.0)
            assert await stored_seqs(db, "solo") == [], "no worker: nothing is stored"
            _, page = await cluster.api("bob").call("GET", "/api/rooms/solo/messages")
            assert [m["seq"] for m in page["messages"]] == [a["seq"] for a in acks], (
                "the node keeps what the store lacks: history is whole while persistence lags"
            )
            worker = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "parley.cli.main",
                "worker",
                "persist",
                # a port of its own: another test's worker may hold the default 9101
                env={**node.env, "PARLEY_METRICS_PORT": str(free_port())},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                for _ in range(150):
                    if len(await stored_seqs(db, "solo")) == 10:
                        break
                    await asyncio.sleep(0.2)
                assert await stored_seqs(db, "solo") == [a["seq"] for a in acks]
                await asyncio.sleep(1.0)  # the node reads the worker's progress
                acks.append(await alice.send_message("solo", "after"))  # trims the window
                _, page = await cluster.api("bob").call("GET", "/api/rooms/solo/messages")
                assert [m["seq"] for m in page["messages"]] == [a["seq"] for a in acks]
            finally:
                worker.terminate()
                await worker.wait()
        finally:
            await cluster.close()


async def stored_seqs(db: str, room: str) -> list[int]:
    import asyncpg

    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT seq FROM messages WHERE room_id = $1 ORDER BY seq", room)
    finally:
        await conn.close()
    return [int(r["seq"]) for r in rows]


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame."""
    mask = os.urandom(4)
    n = len(payload)
    header = bytes((0x81, 0x80 | n)) if n < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


FLOOD = 1500


async def test_a_reader_that_stops_reading_is_closed_and_slows_nobody(
    tmp_path: Path,
) -> None:
    env = base_env("slow", None, f"sqlite:///{tmp_path / 'p.db'}", tmp_path / "data")
    env.update(
        PARLEY_SESSION_QUEUE_BYTES="262144", PARLEY_RATE_LIMIT="10000", PARLEY_RATE_BURST="10000"
    )
    node = ServerProcess(env=env, node_id="n0", log_path=tmp_path / "node.log")
    await node.start()
    import aiohttp

    cluster = Cluster("embedded", [node], aiohttp.ClientSession())
    try:
        await cluster.api("alice").create_room("flood", ["slow", "fast"])
        fast = await cluster.connect("fast")
        await fast.subscribe("flood")
        # The slow reader: a raw socket with a small receive buffer that reads
        # the handshake and its subscribe reply, then nothing.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws?token={token('slow')}&room=flood HTTP/1.1\r\nHost: x\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
        alice = await cluster.connect("alice")
        body = "x" * 4000

        async def fast_reads_everything() -> None:
            while len(fast.messages("flood")) < FLOOD:
                await fast.expect("message", room="flood", timeout=30)

        fast_task = asyncio.create_task(fast_reads_everything())
        acks = []
        for burst in range(0, FLOOD, 25):  # bursts well under the queue limit
            for n in range(burst, burst + 25):
                await alice.send(
                    type="send", room="flood", client_id=f"f{n}", body=body, ref=f"f{n}"
                )
            acks += [
                await alice.expect("ack", ref=f"f{n}", timeout=30) for n in range(burst, burst + 25)
            ]
        data = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        await fast_task
        assert [m["seq"] for m in fast.messages("flood")] == [a["seq"] for a in acks]
        writer.close()
        close_at = data.rfind(b"\x88")
        assert close_at >= 0, "a close frame ends the stream"
        code = struct.unpack("!H", data[close_at + 2 : close_at + 4])[0]
        assert code == 1008
        assert len(data) < FLOOD * 4000, "the slow reader did not get the whole flood"
    finally:
        await cluster.close()


async def test_embedded_node_keeps_seqs_and_idempotency_across_a_restart(
    tmp_path: Path,
) -> None:
    cluster = await _cluster("embedded", 1, tmp_path, None, None)
    try:
        await cluster.api("alice").create_room("keep", ["bob"])
        alice = await cluster.connect("alice")
        first = await alice.send_message("keep", "one", client_id="k1")
        await cluster.nodes[0].restart()
        alice = await cluster.connect("alice")
        again = await alice.send_message("keep", "one", client_id="k1")
        assert (again["id"], again["seq"]) == (first["id"], first["seq"])
        second = await alice.send_message("keep", "two", client_id="k2")
        assert second["seq"] > first["seq"]
        bob = await cluster.connect("bob")
        _, hist = await bob.subscribe("keep")
        assert [m["client_id"] for m in hist["messages"]] == ["k1", "k2"]
    finally:
        await cluster.close()


async def test_a_database_that_goes_away_gets_internal_errors_and_delivery_goes_on(
    tmp_path: Path, services: dict[str, str]
) -> None:
    import asyncpg

    async with pg_database(services["db"]) as db:
        cluster = await _cluster("kafka", 1, tmp_path, services["kafka"], db)
        try:
            await cluster.api("alice").create_room("outage", ["bob"])
            alice = await cluster.connect("alice")
            bob = await cluster.connect("bob")
            await bob.subscribe("outage")
            await alice.send_message("outage", "before")
            admin = await asyncpg.connect(services["db"])
            try:
                await admin.execute(f'DROP DATABASE "{db.rsplit("/", 1)[1]}" WITH (FORCE)')
            finally:
                await admin.close()
            # What needs the database is refused, cleanly (the read marker).
            err = await bob.error("read", room="outage", seq=0)
            assert err["code"] == "internal"
            status, body = await cluster.api("alice").call("GET", "/api/rooms")
            assert status == 503 and body["error"]["code"] == "internal"
            status, ready = await cluster.api("alice").call("GET", "/readyz")
            assert status == 503 and ready["database"] is False
            # The send path needs no database: delivery goes on.
            ack = await alice.send_message("outage", "during")
            got = await bob.expect("message", id=ack["id"])
            assert got["body"] == "during"
            # So is a history the node holds whole in memory.
            hist = await bob.request("history", "history", room="outage")
            assert [m["body"] for m in hist["messages"]] == ["before", "during"]
            assert hist["has_more"] is False
            assert (await bob.request("ping", "pong"))["type"] == "pong"
        finally:
            await cluster.close()
