"""Origin checks for browser connections (cross-site WebSocket hijacking).

A page on another site can open a WebSocket to Parley from a victim's
browser, and browsers do not apply CORS to WebSockets: only the server's
check of the `Origin` header stops it. With PARLEY_ALLOWED_ORIGINS set, a
handshake whose Origin is not listed (nor the node's own, same host) gets
HTTP 403 `forbidden` before anything else happens; unset, any origin may
connect. tests/e2e/test_drain_and_limits.py checks the basic cases; this
adds look-alike origins, the order of the checks (an attacker learns nothing
about tokens from a refused origin), configuration errors, and that REST
grants no CORS access to any origin.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster, ServerProcess, token

ALLOWED = "https://chat.example.test"


async def handshake(node: ServerProcess, origin: str | None, tok: str | None = None) -> int:
    """101 for an open socket (that said hello), else the refusal's status."""
    headers = {"Origin": origin} if origin is not None else {}
    params = {"token": tok if tok is not None else token("alice")}
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(node.ws_url, params=params, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        try:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello", hello
            return 101
        finally:
            await ws.close()


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with own_cluster(
        "embedded",
        tmp_path,
        name="origin",
        settings={"PARLEY_ALLOWED_ORIGINS": f"{ALLOWED}/, http://localhost:5173"},
    ) as cluster:
        yield cluster


LOOKALIKES = [
    "https://chat.example.test.evil.test",  # ours as a prefix of theirs
    "https://evilchat.example.test",  # ours as a suffix
    "https://evil.test/https://chat.example.test",  # ours in their path
    "https://chat.example.tes",
    "https://chat.example.test:8443",  # another port
    "http://chat.example.test",  # another scheme
    "wss://chat.example.test",
    "https://chat.example.test.",  # trailing dot
    "https://chat-example.test",
    "null",  # sandboxed iframes, file:// pages, some redirects
    "",
    "*",
    "https://localhost:5173",  # the other allowed origin, other scheme
    "http://localhost:5174",
    f"{ALLOWED}, https://evil.test",  # a list in one header
    f"https://evil.test {ALLOWED}",
]


async def test_look_alike_origins_are_refused_with_403(guarded: Cluster) -> None:
    node = guarded.nodes[0]
    for origin in LOOKALIKES:
        assert await handshake(node, origin) == 403, origin
    # and the listed ones (with or without a trailing slash) get in
    for origin in (ALLOWED, ALLOWED + "/", "http://localhost:5173"):
        assert await handshake(node, origin) == 101, origin
    # so do clients that are not browsers (no Origin at all)
    assert await handshake(node, None) == 101


async def test_the_origin_is_checked_before_the_token(guarded: Cluster) -> None:
    """A refused origin is refused alike with a good, a bad or no token: a page on
    another site cannot probe tokens through the handshake's status."""
    node = guarded.nodes[0]
    evil = "https://evil.example.test"
    statuses = {
        await handshake(node, evil, token("alice")),
        await handshake(node, evil, "not-a-token"),
        await handshake(node, evil, token("alice", ttl=-10)),
        await handshake(node, evil, ""),
    }
    assert statuses == {403}, statuses
    async with (
        aiohttp.ClientSession() as http,
        http.get(node.ws_url, params={"token": token("alice")}, headers={"Origin": evil}) as resp,
    ):
        assert resp.status == 403
        body = await resp.json()
        assert body["error"]["code"] == "forbidden", body
    # no session was opened for any of them
    async with aiohttp.ClientSession() as http, http.get(node.url + "/metrics") as resp:
        sessions = [
            ln for ln in (await resp.text()).splitlines() if ln.startswith("parley_sessions ")
        ]
    assert sessions == ["parley_sessions 0"], sessions


async def test_any_origin_when_unset_or_star(tmp_path: Path) -> None:
    for name, settings in (("unset", {}), ("star", {"PARLEY_ALLOWED_ORIGINS": "*"})):
        async with own_cluster("embedded", tmp_path, name=name, settings=settings) as cluster:
            for origin in ("https://anything.example.test", "null", None):
                assert await handshake(cluster.nodes[0], origin) == 101, (name, origin)


@pytest.mark.parametrize(
    "value", ["chat.example.test", "ftp://chat.example.test", "https://ok.test, evil"]
)
async def test_an_origin_list_that_is_not_origins_stops_the_node(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(RuntimeError) as failed:
        async with own_cluster(
            "embedded", tmp_path, name="badorigins", settings={"PARLEY_ALLOWED_ORIGINS": value}
        ):
            pass
    assert "PARLEY_ALLOWED_ORIGINS" in str(failed.value)


async def test_rest_grants_no_cross_origin_access(guarded: Cluster) -> None:
    """REST needs an Authorization header, which a page on another site may only send
    after a CORS preflight: the node must not approve one, for any origin."""
    node = guarded.nodes[0]
    async with aiohttp.ClientSession() as http:
        for origin in ("https://evil.example.test", ALLOWED):
            async with http.options(
                node.url + "/api/rooms",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            ) as resp:
                assert "Access-Control-Allow-Origin" not in resp.headers, (origin, resp.headers)
                assert "Access-Control-Allow-Credentials" not in resp.headers
            async with http.get(
                node.url + "/api/rooms",
                headers={"Origin": origin, "Authorization": f"Bearer {token('alice')}"},
            ) as resp:
                assert resp.status == 200
                assert "Access-Control-Allow-Origin" not in resp.headers, (origin, resp.headers)
