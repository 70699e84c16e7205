"""Tokens: the provider is asked again when the token expires or is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from parley.client import Client, Connected, ConnectionState, Unauthorized
from parley.client.tokens import TokenSource, token_claims
from tests.client.support import FAST, Recorder, connected
from tests.harness import Cluster, free_port, token

WRONG = "a-secret-this-server-does-not-know-0123456789"


class Provider:
    """Hands out the given tokens in turn (the last one forever), counting calls."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        return self.tokens[min(self.calls, len(self.tokens)) - 1]


async def test_refused_token_is_replaced_by_a_new_one(node: Cluster) -> None:
    provider = Provider(token("alice", secret=WRONG), token("alice"))
    async with connected(node.nodes[0].url, "alice", token=provider) as (alice, _):
        assert provider.calls == 2  # 401 at the handshake, then a good one
        assert alice.user == "alice"
        # REST shares the (now good) token: no further call.
        assert await alice.rest.rooms() == []
        assert provider.calls == 2


async def test_rest_asks_again_after_a_401(node: Cluster) -> None:
    def sync_provider() -> str:
        calls.append(1)
        return token("bob", secret=WRONG) if len(calls) == 1 else token("bob")

    calls: list[int] = []
    client = Client(node.nodes[0].url, sync_provider)
    try:
        room = await client.rest.create_room("made-by-rest")
        assert room.id == "made-by-rest" and room.owner == "bob"
        assert len(calls) == 2
    finally:
        await client.close()


async def test_fixed_token_refused_is_unauthorized(node: Cluster) -> None:
    client = Client(node.nodes[0].url, token("alice", secret=WRONG))
    with pytest.raises(Unauthorized):
        await asyncio.wait_for(client.connect(), 20)
    assert client.state is ConnectionState.CLOSED
    await client.close()


async def test_provider_whose_tokens_are_always_refused_gives_up(node: Cluster) -> None:
    provider = Provider(token("alice", secret=WRONG))
    client = Client(node.nodes[0].url, provider, backoff=FAST)
    with pytest.raises(Unauthorized):
        await asyncio.wait_for(client.connect(), 20)
    assert provider.calls == 3
    await client.close()


async def test_expired_token_is_renewed_before_reconnecting(node: Cluster) -> None:
    server = node.nodes[0]
    await node.api("alice").create_room("ttl", [])
    issued: list[float] = []

    def short_lived() -> str:
        issued.append(time.time())
        return token("alice", ttl=2)

    async with connected(server.url, "alice", token=short_lived) as (alice, events):
        await alice.subscribe("ttl")
        await alice.send("ttl", "before")
        assert len(issued) == 1
        # Let the token expire: the open connection lives on, a new one needs a new token.
        await asyncio.sleep(max(0.0, issued[0] + 2.2 - time.time()))
        await server.restart()
        await alice.wait_for_state(ConnectionState.CONNECTED)
        await events.wait_for(lambda: len(events.of(Connected)) == 2)
        assert len(issued) >= 2
        assert events.of(Connected)[1].reconnect
        await alice.send("ttl", "after")
        got = await events.wait_messages("ttl", 2)
        assert [m.body for m in got] == ["before", "after"]


@pytest.fixture
async def closes_first_with_4401() -> AsyncIterator[str]:
    """A stand-in server for the one path a Parley node never takes: close 4401 after accepting.

    It greets every connection; a connection with the first token it saw is
    then closed with 4401, as a server that re-checks tokens would.
    """
    first: list[str] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        tok = request.headers.get("Authorization", "")
        first.append(tok) if not first else None
        await sock.send_json(
            {"type": "hello", "user": "alice", "session": "s", "rooms": [], "server": "fake"}
        )
        if tok == first[0]:
            await sock.close(code=4401, message=b"token expired")
        else:
            async for _ in sock:
                pass
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_close_4401_asks_the_provider_again(closes_first_with_4401: str) -> None:
    provider = Provider(token("alice", ttl=600), token("alice", ttl=700))
    client = Client(closes_first_with_4401, provider, backoff=FAST)
    events = Recorder(client)
    try:
        await client.connect()
        await events.wait_for(lambda: len(events.of(Connected)) == 2)
        assert provider.calls == 2
        assert client.state is ConnectionState.CONNECTED
    finally:
        await client.close()
        await events.stop()


def test_token_source_reads_expiry_without_verifying() -> None:
    now = [1_000_000.0]
    tok = token("alice", ttl=100)
    claims = token_claims(tok)
    assert claims is not None and claims["sub"] == "alice"
    assert token_claims("not a jwt") is None
    source = TokenSource(lambda: tok, clock=lambda: now[0])
    exp = claims["exp"]
    now[0] = exp - 50
    assert asyncio.run(source.get()) == tok and source.fetches == 1
    assert asyncio.run(source.get()) == tok and source.fetches == 1  # cached
    now[0] = exp - 1  # inside the refresh margin (a quarter of 100 s, at most 5 s)
    asyncio.run(source.get())
    assert source.fetches == 2
