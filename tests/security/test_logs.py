"""Tokens never appear in the server's output, whatever the client sends.

tests/e2e/test_auth.py greps a DEBUG log after ordinary handshakes and REST
calls. Tokens also travel in requests that go wrong: a handshake refused
with 400, 403 or 429, sockets closed with 4409, 1008, 1009 or 1007, REST
errors of every status, a node draining on SIGTERM, and requests so
malformed that the HTTP parser itself refuses them (a stray byte in the
request line or in the Authorization header, an over-long line). After each
scenario the whole output of the node (stdout and stderr, DEBUG level) is
searched for every token, and for its signature alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import own_cluster
from tests.fuzz.live import healthz
from tests.harness import Cluster, ServerProcess, token

DEBUG = {
    "PARLEY_LOG_LEVEL": "DEBUG",
    "PARLEY_MAX_CONNECTIONS_PER_USER": "2",
    "PARLEY_ALLOWED_ORIGINS": "https://chat.example.test",
}


class Tokens:
    """Hands out a fresh token per use (each a different user), and remembers them."""

    def __init__(self) -> None:
        self.issued: dict[str, str] = {}

    def new(self, why: str, user: str | None = None) -> str:
        tok = token(user or f"u{len(self.issued)}")
        self.issued[why] = tok
        return tok

    def found_in(self, text: str) -> list[str]:
        leaked = []
        for why, tok in self.issued.items():
            signature = tok.rsplit(".", 1)[1]
            if tok in text or signature in text:
                leaked.append(why)
        return leaked


@contextlib.asynccontextmanager
async def debug_node(tmp_path: Path, name: str) -> AsyncIterator[Cluster]:
    async with own_cluster("embedded", tmp_path, name=name, settings=DEBUG) as cluster:
        yield cluster


async def raw_request(node: ServerProcess, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_no_token_in_the_log_from_requests_the_http_parser_refuses(tmp_path: Path) -> None:
    """Requests aiohttp's parser refuses before any Parley code runs: it logs the raw
    line or header in its error, token included, unless the node redacts it."""
    tokens = Tokens()
    async with debug_node(tmp_path, "malformed") as cluster:
        node = cluster.nodes[0]
        auth = "GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization"
        requests: dict[str, Callable[[str], bytes]] = {
            "space_in_the_target": lambda t: f"GET /ws?token={t} x HTTP/1.1\r\n\r\n".encode(),
            "control_byte_in_the_query": lambda t: (
                f"GET /ws?token={t}\x01 HTTP/1.1\r\n\r\n".encode()
            ),
            "bad_http_version": lambda t: f"GET /ws?token={t} HTTP/9.9\r\n\r\n".encode(),
            "bad_method": lambda t: f"G\x01T /ws?token={t} HTTP/1.1\r\n\r\n".encode(),
            "request_line_over_8_kib": lambda t: (
                f"GET /ws?token={t}&pad={'a' * 9000} HTTP/1.1\r\n\r\n".encode()
            ),
            "non_utf8_in_the_query": lambda t: (
                f"GET /ws?token={t}&room=".encode() + b"\xff\xfe HTTP/1.1\r\n\r\n"
            ),
            "control_byte_in_authorization": lambda t: f"{auth}: Bearer {t}\x01\r\n\r\n".encode(),
            "authorization_without_a_colon": lambda t: f"{auth} Bearer {t}\r\n\r\n".encode(),
            "authorization_over_8_kib": lambda t: (
                f"{auth}: Bearer {t}{'a' * 9000}\r\n\r\n".encode()
            ),
            "bad_chunk_after_a_token_in_the_query": lambda t: (
                f"POST /api/rooms?token={t} HTTP/1.1\r\n"
                "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode()
            ),
        }
        for why, make in requests.items():
            answer = await raw_request(node, make(tokens.new(why)))
            assert answer.startswith(b"HTTP/1."), (why, answer[:100])
            assert b" 5" not in answer.split(b"\r\n", 1)[0], (why, answer[:100])
        assert await healthz(node) == 200
    log = node.output()
    assert "ready on http" in log
    leaked = tokens.found_in(log)
    assert leaked == [], f"tokens in the log after: {leaked}"


async def test_no_token_in_the_log_on_any_refusal_or_close(tmp_path: Path) -> None:
    tokens = Tokens()
    async with debug_node(tmp_path, "closes") as cluster, aiohttp.ClientSession() as http:
        node = cluster.nodes[0]

        async def ws(
            why: str, user: str | None = None, origin: str | None = None, **params: str
        ) -> aiohttp.ClientWebSocketResponse | int:
            query = {"token": tokens.new(why, user), **params}
            headers = {"Origin": origin} if origin else {}
            try:
                return await http.ws_connect(
                    node.ws_url, params=query, headers=headers, max_msg_size=0
                )
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

        # refused handshakes: 400 (since, device), 403 (origin), 429 (connections per user)
        assert await ws("bad_since", since="x") == 400
        assert await ws("long_device", device="d" * 65) == 400
        assert await ws("foreign_origin", origin="https://evil.example.test") == 403
        held = [await ws(f"held{i}", user="carl") for i in range(2)]
        for h in held:
            assert not isinstance(h, int)
            assert (await h.receive_json(timeout=10))["type"] == "hello"
        assert await ws("over_the_cap", user="carl") == 429
        for h in held:
            assert not isinstance(h, int)
            await h.close()
        # closes: 4409 (same device), 1008 (errors), 1009 (too large), 1007 (not UTF-8)
        first = await ws("device_first", user="dina", device="phone")
        second = await ws("device_second", user="dina", device="phone")
        assert not isinstance(first, int) and not isinstance(second, int)
        while (msg := await first.receive(10)).type == aiohttp.WSMsgType.TEXT:
            pass
        assert first.close_code == 4409, msg
        await second.close()
        for why, payload in (
            ("error_flood", None),
            ("too_large", "x" * 70_000),
            ("not_utf8", b"\xff"),
        ):
            sock = await ws(why)
            assert not isinstance(sock, int)
            if payload is None:
                for _ in range(60):
                    await sock.send_str("nope")
            elif isinstance(payload, bytes):
                await sock.send_frame(payload, aiohttp.WSMsgType.TEXT)
            else:
                await sock.send_str(payload)
            while (await sock.receive(10)).type == aiohttp.WSMsgType.TEXT:
                pass
            assert sock.close_code in (1008, 1009, 1007), (why, sock.close_code)
            await sock.close()
        # REST errors of every status, the token in the header
        for why, method, path, body in (
            ("rest_404", "GET", "/api/rooms/nosuch", None),
            ("rest_405", "PUT", "/api/rooms", None),
            ("rest_400", "POST", "/api/rooms", b"not json"),
            ("rest_413", "POST", "/api/rooms", b"x" * 300_000),
            ("rest_401_expired", "GET", "/api/rooms", None),
        ):
            tok = tokens.new(why)
            if why == "rest_401_expired":
                tok = tokens.issued[why] = token("eve", ttl=-60)
            async with http.request(
                method, node.url + path, data=body, headers={"Authorization": f"Bearer {tok}"}
            ) as resp:
                assert resp.status == int(why.split("_")[1]), (why, resp.status)
        # a socket still open when the node drains (SIGTERM): closed with 1001
        open_sock = await ws("open_at_shutdown")
        assert not isinstance(open_sock, int)
        await open_sock.receive(10)
        await node.stop()
        while (last := await open_sock.receive(10)).type == aiohttp.WSMsgType.TEXT:
            pass
        # the code the server sent (close_code says 1006 once the socket is gone)
        assert (last.type, last.data) == (aiohttp.WSMsgType.CLOSE, 1001), last
    log = node.output()
    assert "ready on http" in log and "DEBUG" in log
    leaked = tokens.found_in(log)
    assert leaked == [], f"tokens in the log after: {leaked}"


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
async def test_no_token_in_the_log_at_the_usual_levels_either(tmp_path: Path, level: str) -> None:
    """The parser's refusals are logged at ERROR: lowering the level does not hide them."""
    tokens = Tokens()
    async with own_cluster(
        "embedded", tmp_path, name=f"lvl-{level}", settings={"PARLEY_LOG_LEVEL": level}
    ) as cluster:
        node = cluster.nodes[0]
        for why, template in (
            ("space_in_the_target", "GET /ws?token={} x HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                "control_byte_in_authorization",
                "GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\x01\r\n\r\n",
            ),
        ):
            await raw_request(node, template.format(tokens.new(why)).encode())
    leaked = tokens.found_in(node.output())
    assert leaked == [], f"tokens in the {level} log after: {leaked}"
