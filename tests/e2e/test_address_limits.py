"""Limits per client address: handshakes, open connections and messages.

Every test client connects from 127.0.0.1, which is exempt by default
(PARLEY_IP_LIMITS_EXEMPT: a proxy on the same host, local tools); the tests
that exercise a limit turn the exemption off, or name the client through
`X-Forwarded-For` from a trusted proxy (only a header: no traffic goes anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import orjson
from multidict import CIMultiDict

from tests.conftest import own_cluster
from tests.harness import Closed, Cluster, WsClient, token

NOT_EXEMPT = {"PARLEY_IP_LIMITS_EXEMPT": ""}


async def handshake(
    http: aiohttp.ClientSession, cluster: Cluster, user: str, **headers: str
) -> aiohttp.ClientWebSocketResponse | int:
    """An open socket, or the status that refused it."""
    try:
        return await http.ws_connect(
            cluster.nodes[0].ws_url, params={"token": token(user)}, headers=headers
        )
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def statuses(cluster: Cluster, attempts: int, **headers: str) -> list[int]:
    got: list[int] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(attempts):
            ws = await handshake(http, cluster, "alice", **headers)
            if isinstance(ws, int):
                got.append(ws)
            else:
                got.append(101)
                await ws.close()
    return got


async def test_handshakes_per_address_are_limited(tmp_path: Path) -> None:
    async with own_cluster(
        "embedded",
        tmp_path,
        PARLEY_HANDSHAKE_RATE="1",
        PARLEY_HANDSHAKE_BURST="5",
        settings=NOT_EXEMPT,
    ) as cluster:
        got = await statuses(cluster, 8)
        assert got[:5] == [101] * 5
        assert 429 in got[5:], got


async def test_loopback_is_exempt_by_default(tmp_path: Path) -> None:
    async with own_cluster(
        "embedded",
        tmp_path,
        PARLEY_HANDSHAKE_RATE="1",
        PARLEY_HANDSHAKE_BURST="2",
        PARLEY_MAX_CONNECTIONS_PER_IP="1",
    ) as cluster:
        assert await statuses(cluster, 6) == [101] * 6
        held = [await cluster.connect(user) for user in ("alice", "bob", "carol")]
        assert all(c.frames[0]["type"] == "hello" for c in held)


async def test_open_connections_per_address_are_capped(tmp_path: Path) -> None:
    async with (
        own_cluster(
            "embedded", tmp_path, PARLEY_MAX_CONNECTIONS_PER_IP="3", settings=NOT_EXEMPT
        ) as c,
        aiohttp.ClientSession() as http,
    ):
        held = [await handshake(http, c, user) for user in ("alice", "alice", "bob")]
        assert all(not isinstance(ws, int) for ws in held), held
        assert await handshake(http, c, "carol") == 429  # another user, the same address
        first = held[0]
        assert not isinstance(first, int)
        await first.close()
        await asyncio.sleep(0.2)
        again = await handshake(http, c, "carol")
        assert not isinstance(again, int)
        assert (await again.receive_json())["type"] == "hello"
        for ws in (*held[1:], again):
            assert not isinstance(ws, int)
            await ws.close()


async def test_trusted_proxies_name_the_client(tmp_path: Path) -> None:
    """Behind a proxy, each client is limited on its own, never the proxy as a whole;
    an address claimed by a client that is no trusted proxy is ignored."""
    async with (
        own_cluster(
            "embedded",
            tmp_path,
            PARLEY_MAX_CONNECTIONS_PER_IP="1",
            PARLEY_TRUSTED_PROXIES="127.0.0.1",
            settings=NOT_EXEMPT,
        ) as c,
        aiohttp.ClientSession() as http,
    ):
        one = await handshake(http, c, "alice", **{"X-Forwarded-For": "203.0.113.7"})
        assert not isinstance(one, int)
        # The client claimed 10.9.9.9 in front of it; the proxy appended the real one,
        # with a port, as some proxies do.
        spoofed = {"X-Forwarded-For": "10.9.9.9, 203.0.113.7:4711"}
        assert await handshake(http, c, "bob", **spoofed) == 429
        # A proxy that adds a header line of its own rather than appending: the
        # client's own line (10.9.9.9, a fresh address) is not the last word.
        two_lines = CIMultiDict(
            [("X-Forwarded-For", "10.9.9.9"), ("X-Forwarded-For", "203.0.113.7")]
        )
        try:
            extra = await http.ws_connect(
                c.nodes[0].ws_url, params={"token": token("carol")}, headers=two_lines
            )
            await extra.close()
            status = 101
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
        assert status == 429
        other = await handshake(http, c, "bob", **{"X-Forwarded-For": "203.0.113.8"})
        assert not isinstance(other, int)
        for ws in (one, other):
            await ws.close()

    async with (
        own_cluster(
            "embedded",
            tmp_path,
            name="noproxy",
            PARLEY_MAX_CONNECTIONS_PER_IP="1",
            settings=NOT_EXEMPT,
        ) as c,
        aiohttp.ClientSession() as http,
    ):
        # Without PARLEY_TRUSTED_PROXIES the header is the client's word: ignored.
        one = await handshake(http, c, "alice", **{"X-Forwarded-For": "203.0.113.7"})
        assert not isinstance(one, int)
        assert await handshake(http, c, "bob", **{"X-Forwarded-For": "203.0.113.8"}) == 429
        await one.close()


async def test_messages_per_address_are_limited_across_users(tmp_path: Path) -> None:
    """Two users of one address share its message budget (each user's own is larger)."""
    async with own_cluster(
        "embedded",
        tmp_path,
        PARLEY_IP_RATE_LIMIT="0.5",
        PARLEY_IP_RATE_BURST="4",
        settings=NOT_EXEMPT,
    ) as cluster:
        await cluster.api("alice").create_room("shared", ["bob"])
        alice = await cluster.connect("alice")
        bob = await cluster.connect("bob")
        for i in range(2):
            await alice.send_message("shared", f"a{i}")
        for i in range(2):
            await bob.send_message("shared", f"b{i}")
        refused = await bob.error("send", room="shared", client_id="b2", body="b2")
        assert refused["code"] == "rate_limited", refused
        assert "address" in refused["message"], refused
        # REST sends draw on the same budget.
        status, body = await cluster.api("alice").call(
            "POST", "/api/rooms/shared/messages", {"client_id": "r1", "body": "over REST"}
        )
        assert status == 429 and body["error"]["code"] == "rate_limited", (status, body)


def send_frames(start: int, count: int) -> list[str]:
    return [
        orjson.dumps(
            {"type": "send", "room": "r", "client_id": f"f{i}", "body": "x", "ref": f"f{i}"}
        ).decode()
        for i in range(start, start + count)
    ]


async def test_a_client_that_keeps_sending_through_rate_limited_is_closed_with_1008(
    tmp_path: Path,
) -> None:
    """Refused at least 50 times a second for 10 s in a row: flooding."""
    async with own_cluster(
        "embedded", tmp_path, PARLEY_RATE_LIMIT="1", PARLEY_RATE_BURST="1"
    ) as cluster:
        await cluster.api("alice").create_room("r")
        flooder = await cluster.connect("alice")
        calm = await cluster.connect("bob")
        began = time.monotonic()
        sent = 0
        while flooder.close_code is None and time.monotonic() - began < 30:
            # Up to 400 frames/s: 8x the 50 refusals a second that count as
            # flooding, so a loaded machine that slows this loop still floods.
            for frame in send_frames(sent, 40):
                await flooder.send_raw(frame)
            sent += 40
            with contextlib.suppress(Closed):
                await flooder.drain(0.1)
        assert flooder.close_code == 1008, flooder.close_code
        # Counted in whole clock seconds, the first one partial.
        assert 8 <= time.monotonic() - began < 20
        # Only the flooder's connection: another session of the node carries on.
        await calm.send(type="ping", ref="p")
        assert (await calm.expect("pong"))["ref"] == "p"


async def test_a_pipelined_burst_far_past_the_limit_is_answered_not_closed(
    tmp_path: Path,
) -> None:
    """A client pipelining its backlog (after a reconnect, say) gets an answer to
    every send, acks and `rate_limited`, and keeps its connection."""
    async with own_cluster(
        "embedded", tmp_path, PARLEY_RATE_LIMIT="20", PARLEY_RATE_BURST="40"
    ) as cluster:
        await cluster.api("alice").create_room("r")
        alice: WsClient = await cluster.connect("alice")
        for frame in send_frames(0, 3000):
            await alice.send_raw(frame)
        # Refusals are answered at once; acks once the log has the message.
        for i in range(3000):
            await alice.reply(f"f{i}", within=30)
        answers = [f for f in alice.frames if f["type"] in ("ack", "error")]
        assert len(answers) == 3000, len(answers)
        acks = sum(f["type"] == "ack" for f in answers)
        assert 40 <= acks < 3000, acks
        assert all(f["code"] == "rate_limited" for f in answers if f["type"] == "error")
        assert alice.close_code is None


async def test_handshakes_per_user_are_limited_from_any_address(tmp_path: Path) -> None:
    """Loopback is exempt from the per-address limits, not from the per-user one."""
    async with own_cluster(
        "embedded", tmp_path, PARLEY_USER_HANDSHAKE_RATE="1", PARLEY_USER_HANDSHAKE_BURST="4"
    ) as cluster:
        got = await statuses(cluster, 7)
        assert got[:4] == [101] * 4
        assert 429 in got[4:], got
        other = await cluster.connect("bob")  # another user is not affected
        assert other.frames[0]["type"] == "hello"
