"""Graceful operations and abuse limits, through `parley serve` only.

SIGTERM drains a gateway: it stops accepting, lets sends in flight get their
ack, closes every session with 1001 so clients resume elsewhere, and exits
within PARLEY_DRAIN_TIMEOUT. Connections per user and browser origins are
limited by configuration (limits per address: test_address_limits.py).
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster, token
from tests.raw_ws import CLOSE, TEXT, RawSocket, ws_frame


async def test_sigterm_drains_sends_in_flight_then_closes_with_1001(two_nodes: Cluster) -> None:
    room = f"d{uuid.uuid4().hex[:8]}"
    await two_nodes.api("alice").create_room(room, ["bob"])
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe(room)
    alice = await two_nodes.connect("alice", node=0)
    for i in range(300):
        await alice.send(type="send", room=room, client_id=f"c{i}", body=f"m{i}", ref=f"c{i}")
    started = time.monotonic()
    code = await two_nodes.nodes[0].stop()
    took = time.monotonic() - started
    assert code == 0 and took < 10
    assert await alice.wait_closed() == 1001
    answered = [f for f in alice.frames if f.get("type") in ("ack", "error")]
    acked = {f["client_id"]: f for f in answered if f["type"] == "ack"}
    refused = [f for f in answered if f["type"] == "error"]
    # Every send the node read got one answer before the close: an ack if it
    # was produced before the drain began, else "server going away" (it was
    # not produced; the client retries it elsewhere). How many were read
    # before SIGTERM is up to the scheduler.
    read = sorted(int(f["ref"][1:]) for f in answered)
    assert read == list(range(len(read))), read[:10]
    assert all(f["code"] == "internal" and "going away" in f["message"] for f in refused), refused
    if acked and refused:
        assert max(int(c[1:]) for c in acked) < min(int(f["ref"][1:]) for f in refused)
    assert "drained in" in two_nodes.nodes[0].output()
    # The client resumes on the other node: every ack is there once, in order.
    await bob.drain(1.0)
    got = [m["client_id"] for m in bob.messages(room)]
    assert len(got) == len(set(got))
    assert set(acked) <= set(got)
    again = await two_nodes.connect("alice", node=1)
    missing = [f"c{i}" for i in range(300) if f"c{i}" not in acked]
    for cid in missing:  # the retry of a send the drain cut off: same client_id
        await again.send_message(room, f"m{cid[1:]}", client_id=cid)
    await bob.drain(1.0)
    final = [m["client_id"] for m in bob.messages(room)]
    assert sorted(final) == sorted(f"c{i}" for i in range(300))


async def test_drain_reads_until_the_clients_close_before_closing_the_socket(
    tmp_path: Path,
) -> None:
    """RFC 6455 §7.1.1: the server ends the TCP connection after the close handshake.

    Closing it right after our close frame would leave frames the client sent
    meanwhile unread; the kernel then resets the connection, and a client that
    writes again before reading our close frame loses it and sees 1006.
    """
    async with own_cluster("embedded", tmp_path, PARLEY_DRAIN_TIMEOUT="3") as cluster:
        node = cluster.nodes[0]
        sock = await RawSocket.open(node, "alice")
        try:
            stopping = asyncio.create_task(node.stop())
            opcode, data = await sock.read()
            assert opcode == CLOSE and struct.unpack("!H", data[:2])[0] == 1001, data
            # A frame of ours that crossed the close frame: read and dropped by
            # the node, which keeps the connection until our close frame arrives.
            sock.writer.write(ws_frame(TEXT, b'{"type":"ping","ref":"late"}'))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sock.reader.read(1), 0.5)
            sock.writer.write(ws_frame(CLOSE, struct.pack("!H", 1001)))
            # At once (1 s), not when the node gives up on a silent peer (5 s).
            assert await asyncio.wait_for(sock.reader.read(), 1) == b"", "nothing after the close"
            assert await stopping == 0
        finally:
            await sock.close()


async def test_readyz_says_not_ready_while_draining(tmp_path: Path) -> None:
    async with own_cluster("embedded", tmp_path, PARLEY_DRAIN_TIMEOUT="3") as cluster:
        node = cluster.nodes[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.url}/readyz") as resp:
                assert resp.status == 200 and (await resp.json())["accepting"] is True
        assert await node.stop() == 0


async def test_connections_per_user_are_capped(tmp_path: Path) -> None:
    async with own_cluster("embedded", tmp_path, PARLEY_MAX_CONNECTIONS_PER_USER="3") as cluster:
        held = [await cluster.connect("alice") for _ in range(3)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await cluster.connect("alice")
        assert refused.value.status == 429
        other = await cluster.connect("bob")  # another user is not affected
        assert other.frames[0]["type"] == "hello"
        await held[0].close()
        await asyncio.sleep(0.2)
        replacement = await cluster.connect("alice")
        assert replacement.frames[0]["type"] == "hello"


async def test_browser_origins_are_checked_when_configured(tmp_path: Path) -> None:
    async with own_cluster(
        "embedded", tmp_path, PARLEY_ALLOWED_ORIGINS="https://chat.example, http://127.0.0.1:1"
    ) as cluster:
        node = cluster.nodes[0]
        async with aiohttp.ClientSession() as http:
            for origin, allowed in (
                ("https://chat.example", True),
                ("http://127.0.0.1:1", True),
                ("https://evil.example", False),
                (None, True),  # not a browser: no Origin header
            ):
                headers = {"Origin": origin} if origin else {}
                try:
                    ws = await http.ws_connect(
                        node.ws_url, params={"token": token("alice")}, headers=headers
                    )
                    await ws.close()
                    ok = True
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 403
                    ok = False
                assert ok is allowed, origin


async def test_any_origin_by_default(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            cluster.nodes[0].ws_url,
            params={"token": token("alice")},
            headers={"Origin": "https://anywhere.example"},
        )
        assert (await ws.receive_json())["type"] == "hello"
        await ws.close()


async def test_presence_travels_only_through_rooms_up_to_the_size_limit(tmp_path: Path) -> None:
    """A room over PARLEY_PRESENCE_MAX_ROOM members carries no presence (N joins, N² frames)."""
    async with own_cluster("embedded", tmp_path, PARLEY_PRESENCE_MAX_ROOM="3") as cluster:
        await cluster.api("alice").create_room("big", ["bob", "carol", "dave"])
        await cluster.api("alice").create_room("small", ["carol"])
        bob = await cluster.connect("bob")
        carol = await cluster.connect("carol")
        await cluster.connect("alice")
        # carol shares `small` (2 members) with alice: she hears of her.
        await carol.expect("presence", user="alice", status="online")
        # bob shares only `big` (4 members) with alice: he does not.
        await bob.drain(1.0)
        assert [f for f in bob.frames if f.get("type") == "presence"] == []
        # A DM always carries presence, whatever else is shared.
        await bob.send_message("dm:alice:bob", "hello")
        for _ in range(100):  # the DM exists for `hello.rooms` once its message is stored
            _, rooms = await cluster.api("bob").call("GET", "/api/rooms")
            if any(r["id"] == "dm:alice:bob" for r in rooms):
                break
            await asyncio.sleep(0.05)
        late = await cluster.connect("bob", device="second")
        await late.expect("presence", user="alice", status="online")
