"""No endpoint tells a non-member whether a room exists.

For every REST endpoint (every method, valid and invalid bodies and query
parameters) and every WebSocket frame type (and the handshake's `room`,
`since` and `receiver` parameters), the answer to a stranger about a room
that exists (with members and messages) must be byte for byte the answer
about a room that never existed, once the room id is replaced by a
placeholder: same status, same headers but Date, same body. The two ids
have the same length, so not even Content-Length differs. A member who was
removed is a stranger too. tests/e2e compares parsed bodies of a few of
these; this compares bytes, on all of them, and also looks at /metrics,
which needs no token at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster, ServerProcess, token

PLACEHOLDER = b"<ROOM>"


def same_length_ids() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"secret-{tag}", f"nosuch-{tag}"


def scrub(data: bytes, room: str) -> bytes:
    return data.replace(room.encode(), PLACEHOLDER).replace(
        room.replace(":", "%3A").encode(), PLACEHOLDER
    )


async def rest_answer(
    node: ServerProcess,
    user: str,
    method: str,
    path: str,
    body: bytes | None,
    room: str,
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = {"Authorization": f"Bearer {token(user)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, node.url + path, data=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        kept = sorted((k, v) for k, v in resp.headers.items() if k.lower() != "date")
        return (
            resp.status,
            [(k, scrub(v.encode(), room).decode()) for k, v in kept],
            scrub(raw, room),
        )


def rest_calls() -> list[tuple[str, str, bytes | None]]:
    big = orjson.dumps({"client_id": "x", "body": "b" * 5000})
    huge = b'{"pad": "' + b"p" * 300_000 + b'"}'
    calls: list[tuple[str, str, bytes | None]] = []
    for method in ("GET", "HEAD", "PUT", "PATCH", "DELETE", "POST", "OPTIONS"):
        calls.append((method, "/api/rooms/{}", None))
    for query in (
        "",
        "?limit=5",
        "?before=3&limit=2",
        "?limit=1000",
        "?before=-1",
        "?limit=x",
        "?before=99999999999999999999999",
    ):
        calls.append(("GET", "/api/rooms/{}/messages" + query, None))
    for body in (
        b'{"client_id": "m1", "body": "let me in"}',
        b'{"client_id": "", "body": "x"}',
        b'{"client_id": "m1"}',
        b"not json",
        b"[]",
        big,
        huge,
        None,
    ):
        calls.append(("POST", "/api/rooms/{}/messages", body))
    for body in (b'{"user": "mallory"}', b'{"user": "not valid!"}', b"{}", b"nope", huge, None):
        calls.append(("POST", "/api/rooms/{}/members", body))
    for user in ("bob", "carol", "mallory", "alice", "dave", "not%20valid"):
        calls.append(("DELETE", f"/api/rooms/{{}}/members/{user}", None))
        calls.append(("GET", f"/api/rooms/{{}}/members/{user}", None))
    calls.append(("PUT", "/api/rooms/{}/messages", b"{}"))
    calls.append(("GET", "/api/rooms/{}/nothing-here", None))
    return calls


FRAMES: list[dict[str, Any]] = [
    {"type": "subscribe"},
    {"type": "subscribe", "since": -1},
    {"type": "subscribe", "since": 0},
    {"type": "subscribe", "since": 10**6},
    {"type": "unsubscribe"},
    {"type": "send", "client_id": "nm", "body": "let me in"},
    {"type": "send", "client_id": "nm", "body": "   "},
    {"type": "send", "client_id": "nm", "body": "b" * 5000},
    {"type": "send", "client_id": "", "body": "x"},
    {"type": "history"},
    {"type": "history", "before": 1, "limit": 5},
    {"type": "history", "limit": 1000},
    {"type": "typing"},
    {"type": "read", "seq": 0},
    {"type": "read", "seq": 10**6},
    {"type": "read"},
]


class RawWs:
    """A socket whose every frame is kept as the bytes the server sent."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.texts: list[str] = []

    @classmethod
    async def open(cls, node: ServerProcess, user: str, **params: str) -> RawWs:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(node.ws_url, params={"token": token(user), **params})
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    async def until(self, ref: str | None = None, *, quiet: float = 0.0) -> list[str]:
        """Frames up to the pong of a sentinel ping (everything a frame caused)."""
        sentinel = f"sentinel-{uuid.uuid4().hex[:6]}"
        await self.ws.send_str(orjson.dumps({"type": "ping", "ref": sentinel}).decode())
        got: list[str] = []
        while True:
            msg = await self.ws.receive(10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if sentinel in msg.data:
                return got
            frame = orjson.loads(msg.data)
            if frame.get("type") in ("presence", "hello"):
                continue  # about users, not rooms; their timing is the roster's
            got.append(msg.data)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Cluster, str, str]]:
    """bob's room with carol and a message; dave was in it and was removed; and a DM of bob's."""
    async with own_cluster("embedded", tmp_path, name="exist") as cluster:
        secret, nosuch = same_length_ids()
        await cluster.api("bob").create_room(secret, ["carol", "dave"])
        status, _ = await cluster.api("bob").call(
            "POST", f"/api/rooms/{secret}/messages", {"client_id": "s1", "body": "top secret"}
        )
        assert status == 201
        status, _ = await cluster.api("bob").call("DELETE", f"/api/rooms/{secret}/members/dave")
        assert status == 204
        status, _ = await cluster.api("bob").call(
            "POST", "/api/rooms/dm:bob:carol/messages", {"client_id": "d1", "body": "psst"}
        )
        assert status == 201
        yield cluster, secret, nosuch


@pytest.mark.parametrize("stranger", ["alice", "dave"])
async def test_every_rest_endpoint_answers_the_same_bytes(
    world: tuple[Cluster, str, str], stranger: str
) -> None:
    cluster, secret, nosuch = world
    node = cluster.nodes[0]
    for method, shape, body in rest_calls():
        existing = await rest_answer(node, stranger, method, shape.format(secret), body, secret)
        missing = await rest_answer(node, stranger, method, shape.format(nosuch), body, nosuch)
        assert existing[0] < 500, (method, shape, existing)
        assert existing == missing, (method, shape, existing, missing)
    # DM rooms exist for any pair: one with messages and one without look alike
    for method, shape, body in rest_calls():
        talked = await rest_answer(
            node, stranger, method, shape.format("dm:bob:carol"), body, "dm:bob:carol"
        )
        silent = await rest_answer(
            node, stranger, method, shape.format("dm:bob:zzzzz"), body, "dm:bob:zzzzz"
        )
        assert talked == silent, (method, shape, talked, silent)


@pytest.mark.parametrize("stranger", ["alice", "dave"])
async def test_every_frame_type_answers_the_same_bytes(
    world: tuple[Cluster, str, str], stranger: str
) -> None:
    cluster, secret, nosuch = world
    node = cluster.nodes[0]
    for pair in ((secret, nosuch), ("dm:bob:carol", "dm:bob:zzzzz")):
        for frame in FRAMES:
            # one connection per frame: the answers are errors, and 50 of them close it
            ws = await RawWs.open(node, stranger)
            try:
                await ws.until()  # hello and presence out of the way
                answers = []
                for room in pair:
                    await ws.ws.send_str(
                        orjson.dumps({**frame, "room": room, "ref": "same"}).decode()
                    )
                    texts = await ws.until()
                    answers.append([scrub(t.encode(), room) for t in texts])
                assert answers[0] == answers[1], (frame, answers)
                assert answers[0], f"{frame} got no answer at all"
            finally:
                await ws.close()


@pytest.mark.parametrize(
    "params",
    [
        {"room": "{}"},
        {"room": "{}", "since": "0"},
        {"room": "{}", "since": "-1"},
        {"room": "{}", "since": "x"},
        {"receiverId": "{}"},
    ],
    ids=["room", "room-since", "room-since-start", "room-bad-since", "receiverId"],
)
async def test_the_handshake_answers_the_same_bytes(
    world: tuple[Cluster, str, str], params: dict[str, str]
) -> None:
    cluster, secret, nosuch = world
    node = cluster.nodes[0]
    answers = []
    for room in (secret, nosuch):
        query = {k: v.format(room) for k, v in params.items()}
        try:
            ws = await RawWs.open(node, "alice", **query)
        except aiohttp.WSServerHandshakeError as exc:
            answers.append([f"refused {exc.status}".encode()])
            continue
        try:
            texts = await ws.until()
            answers.append([scrub(t.encode(), room) for t in texts if '"hello"' not in t])
        finally:
            await ws.close()
    assert answers[0] == answers[1], answers


async def test_metrics_name_no_room(tmp_path: Path, services: dict[str, str]) -> None:
    """/metrics needs no token: a room id in a label tells anyone that the room exists,
    and a DM room's id who talks to whom. Checked with every in-process worker on."""
    async with own_cluster(
        "kafka",
        tmp_path,
        services,
        name="metrics",
        settings={"PARLEY_WORKERS": "persist,analytics"},
    ) as cluster:
        secret, _ = same_length_ids()
        await cluster.api("bob").create_room(secret, ["carol"])
        carol = await cluster.connect("carol")
        await carol.subscribe(secret)
        for room in (secret, "dm:bob:carol"):
            status, ack = await cluster.api("bob").call(
                "POST", f"/api/rooms/{room}/messages", {"client_id": "m", "body": "hi"}
            )
            assert status == 201, ack
        await carol.expect("message", room=secret)
        node = cluster.nodes[0]
        async with aiohttp.ClientSession() as http:
            # wait until the analytics worker has read bob's messages (it then counts
            # him as an active user), so that whatever it exposes is exposed
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                async with http.get(node.url + "/metrics") as resp:
                    assert resp.status == 200
                    text = await resp.text()
                active = [ln for ln in text.splitlines() if ln.startswith("parley_active_users ")]
                if active and float(active[0].split()[1]) >= 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, "analytics never caught up"
                await carol.drain(0.2)
        leaked = [ln for ln in text.splitlines() if secret in ln or "dm:bob:carol" in ln]
        assert leaked == [], leaked
