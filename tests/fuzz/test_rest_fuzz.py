"""Hypothesis against the REST API of a live node: random JSON bodies, wrong types,
huge bodies, bad paths and bad `before`/`limit`.

Each request must get PROTOCOL.md's status with the JSON error body
`{"error": {"code", "message"}}` whose code matches the status, never a 5xx;
where the request is valid, the answer is checked against what the test
knows (the room's messages, the rooms created). The node runs with a room
window of 3 so that history pages come from the database as well as from
memory. After each test the node is alive and logged no error.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.conftest import own_cluster
from tests.fuzz.live import healthz
from tests.fuzz.model import is_name, json_values
from tests.harness import Cluster, token

REST = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_REQUEST_BYTES = 256 * 1024  # docs/protocol-notes.md: request bodies over 256 KiB answer 413
# PROTOCOL.md's REST codes, plus `forbidden` and `too_large` (docs/protocol-notes.md).
CODE_OF_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}
ASCII_INT = re.compile(r"-?[0-9]+")


@dataclass
class Reply:
    status: int
    body: Any
    raw: bytes
    content_type: str


@dataclass
class RestTarget:
    cluster: Cluster
    seqs: list[int]  # the seqs of fz's messages, oldest first
    rooms: set[str] = field(default_factory=set)  # every group room id that exists

    async def call(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        user: str = "alice",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        node = self.cluster.nodes[0]
        url = URL(node.url + path, encoded=True)
        hdrs = {"Authorization": f"Bearer {token(user)}", **(headers or {})}
        async with self.cluster.http.request(method, url, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            body: Any = None
            if resp.content_type == "application/json" and raw:
                body = orjson.loads(raw)
            reply = Reply(resp.status, body, raw, resp.content_type)
        check_reply(reply, method, path)
        return reply


def check_reply(reply: Reply, method: str, path: str) -> None:
    """What holds for every answer: no 5xx; errors are the JSON error body."""
    where = f"{method} {path[:200]}"
    assert reply.status < 500, (where, reply.status, reply.raw[:500])
    if method == "HEAD":
        assert reply.raw == b"", where
        return
    if reply.status == 204:
        assert reply.raw == b"", where
        return
    assert reply.content_type == "application/json", (where, reply.status, reply.raw[:200])
    if reply.status >= 400:
        assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, (where, reply.body)
        err = reply.body["error"]
        assert set(err) == {"code", "message"}, (where, err)
        assert err["code"] == CODE_OF_STATUS[reply.status], (where, reply.status, err)
        assert isinstance(err["message"], str) and 0 < len(err["message"]) <= 200, (where, err)


def seg(text: str) -> str:
    """One path segment, percent-encoded (so that '/' or '?' stay inside it)."""
    return urllib.parse.quote(text, safe="")


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[RestTarget]:
    async with own_cluster(
        "embedded", tmp_path, name="rest", settings={"PARLEY_ROOM_WINDOW": "3"}
    ) as cluster:
        await cluster.api("alice").create_room("fz", ["bob"])
        await cluster.api("bob").create_room("secret", ["carol"])
        seqs = []
        for i in range(8):
            status, ack = await cluster.api("alice").call(
                "POST", "/api/rooms/fz/messages", {"client_id": f"seed{i}", "body": f"seed {i}"}
            )
            assert status == 201, ack
            seqs.append(ack["seq"])
        yield RestTarget(cluster, seqs, {"fz", "secret"})
        node = cluster.nodes[0]
        assert node.proc is not None and node.proc.returncode is None
        assert await healthz(node) == 200
        log = node.output()
        assert " ERROR " not in log and "Traceback" not in log, log[-3000:]


# Bodies --------------------------------------------------------------------------------

user_ids = st.one_of(
    st.sampled_from(["bob", "carol", "d.e-f_g", "u" * 64, "u" * 65, "", "not valid!", "dm:a:b"]),
    st.text(max_size=70),
    json_values,
)
room_ids = st.one_of(
    st.sampled_from(["fz", "secret", "r" * 64, "r" * 65, "dm:alice:bob", "", "a b", "x/y"]),
    st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    st.text(max_size=70),
    json_values,
)
room_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": room_ids,
        "name": st.one_of(
            st.text(max_size=210), st.integers(195, 205).map("n".__mul__), json_values
        ),
        "members": st.one_of(
            st.lists(user_ids, max_size=5),
            st.lists(st.sampled_from(["bob", "carol"]), max_size=3),
            json_values,
        ),
        "extra": json_values,
    },
)
message_bodies = st.fixed_dictionaries(
    {},
    optional={
        "client_id": st.one_of(
            st.text(max_size=70), st.integers(60, 70).map("c".__mul__), json_values
        ),
        "body": st.one_of(
            st.text(max_size=30),
            st.text(alphabet=" \t\n", max_size=3),
            st.integers(4090, 4100).map(lambda n: " " + "b" * n + " "),
            json_values,
        ),
        "extra": json_values,
    },
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
)


def encoded(value: Any) -> bytes:
    return orjson.dumps(value)


raw_bodies = st.one_of(
    st.binary(max_size=100),
    st.sampled_from(
        [b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b'{"id": "a"} {}', b"{'id': 'a'}"]
    ),
    st.integers(1, 3000).map(lambda d: b'{"id": ' + b"[" * d + b"]" * d + b"}"),
)


def room_faults(body: Any) -> set[int]:
    """The statuses POST /api/rooms may answer for this body, besides success."""
    if not isinstance(body, dict):
        return {400}
    faults = set()
    room, name, members = body.get("id"), body.get("name"), body.get("members", [])
    if not isinstance(room, str) or not is_name(room):
        faults.add(400)
    if name is not None and not isinstance(name, str):
        faults.add(400)
    shown = name if isinstance(name, str) and name else room  # the name defaults to the id
    if isinstance(shown, str) and len(shown) > 200:
        faults.add(400)
    if members is None:
        pass  # null for an optional field: absent or refused, both are fair readings
    elif not isinstance(members, list) or not all(
        isinstance(m, str) and is_name(m) for m in members
    ):
        faults.add(400)
    return faults


@REST
@given(body=st.one_of(room_bodies, json_values), content_type=content_types)
async def test_create_room_with_any_json_body(
    target: RestTarget, body: Any, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = await target.call("POST", "/api/rooms", data=encoded(body), headers=headers)
    faults = room_faults(body)
    null_members = isinstance(body, dict) and "members" in body and body["members"] is None
    if faults:
        assert reply.status in faults, (body, reply)
    elif body["id"] in target.rooms:
        assert reply.status in ({409, 400} if null_members else {409}), (body, reply)
    else:
        assert reply.status in ({201, 400} if null_members else {201}), (body, reply)
    if reply.status == 201:
        room = reply.body
        assert room["id"] == body["id"] and room["owner"] == "alice", room
        assert room["name"] == (body.get("name") or body["id"]), room
        assert set(room["members"]) == {"alice", *(body.get("members") or [])}, room
        target.rooms.add(body["id"])


@REST
@given(data=raw_bodies)
async def test_create_room_with_a_body_that_is_not_a_json_object(
    target: RestTarget, data: bytes
) -> None:
    reply = await target.call("POST", "/api/rooms", data=data)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
    assert reply.status == 400 or isinstance(value, dict), (data[:100], reply)


def message_faults(body: Any) -> set[int]:
    if not isinstance(body, dict):
        return {400}
    faults = set()
    client_id, text = body.get("client_id"), body.get("body")
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
        faults.add(400)
    if not isinstance(text, str) or not text.strip():
        faults.add(400)
    elif len(text.strip()) > 4096:
        faults.add(413)
    return faults


@REST
@given(
    room=st.sampled_from(["fz", "fz", "fz", "secret", "nosuch", "dm:alice:bob", "dm:bob:carol"]),
    body=st.one_of(message_bodies, json_values),
)
async def test_post_message_with_any_body(target: RestTarget, room: str, body: Any) -> None:
    reply = await target.call("POST", f"/api/rooms/{seg(room)}/messages", data=encoded(body))
    member = room in ("fz", "dm:alice:bob")
    if not member:
        # the room comes first: a stranger learns nothing from the body's faults
        assert reply.status == 404, (room, body, reply)
        return
    faults = message_faults(body)
    if faults:
        assert reply.status in faults, (body, reply)
        return
    assert reply.status == 201, (body, reply)
    ack = reply.body
    assert set(ack) == {"room", "client_id", "id", "seq", "ts"}, ack
    assert (ack["room"], ack["client_id"]) == (room, body["client_id"])
    if room == "fz" and ack["seq"] not in target.seqs:
        target.seqs.append(ack["seq"])


@REST
@given(
    room=st.sampled_from(["fz", "fz", "secret", "nosuch", "dm:alice:bob"]),
    body=st.one_of(
        st.fixed_dictionaries({}, optional={"user": user_ids, "x": json_values}), json_values
    ),
)
async def test_add_member_with_any_body(target: RestTarget, room: str, body: Any) -> None:
    reply = await target.call("POST", f"/api/rooms/{seg(room)}/members", data=encoded(body))
    if room not in ("fz", "dm:alice:bob"):
        assert reply.status == 404, (room, body, reply)
        return
    user = body.get("user") if isinstance(body, dict) else None
    if not isinstance(user, str) or not is_name(user) or room.startswith("dm:"):
        assert reply.status == 400, (room, body, reply)
        return
    assert reply.status in (200, 201), (body, reply)
    assert user in reply.body["members"], reply.body


# Query parameters -------------------------------------------------------------------------

query_values = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "3",
            "5",
            "50",
            "100",
            "101",
            "-1",
            "-0",
            "+5",
            " 5",
            "5 ",
            "1e2",
            "1.0",
            "0x10",
            "\u0665",  # an Arabic-Indic five
            "1_0",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999999",
            "-9223372036854775809",
            "NaN",
            "null",
            "[]",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=12),
)


def parse_int(raw: str | None, minimum: int, maximum: int | None) -> int | str | None:
    """None (absent), the value, "bad", or "lenient" for spellings PROTOCOL.md does not fix."""
    if raw is None or raw == "":
        return None
    if not ASCII_INT.fullmatch(raw):
        return "lenient"
    value = int(raw)
    if value < minimum or (maximum is not None and value > maximum):
        return "bad"
    return value


@REST
@given(before=query_values, limit=query_values, extra=st.text(max_size=10))
async def test_history_with_any_before_and_limit(
    target: RestTarget, before: str | None, limit: str | None, extra: str
) -> None:
    params = [
        (k, v) for k, v in (("before", before), ("limit", limit), ("x", extra)) if v is not None
    ]
    query = urllib.parse.urlencode(params)
    reply = await target.call("GET", f"/api/rooms/fz/messages?{query}")
    b, n = parse_int(before, 0, None), parse_int(limit, 1, 100)
    if "bad" in (b, n):
        assert reply.status == 400, (before, limit, reply)
        return
    if "lenient" in (b, n):
        assert reply.status in (200, 400), (before, limit, reply)
        return
    assert reply.status == 200, (before, limit, reply)
    assert isinstance(b, int | None) and isinstance(n, int | None)
    page = reply.body
    older = [s for s in sorted(target.seqs) if b is None or s < b]
    want = older[-(n or 50) :]
    assert [m["seq"] for m in page["messages"]] == want, (before, limit, page)
    assert page["has_more"] is (len(older) > len(want)), (before, limit, page)
    assert page["room"] == "fz" and all(m["room"] == "fz" for m in page["messages"])


# Paths, methods and sizes --------------------------------------------------------------------

segments = st.one_of(
    st.sampled_from(["secret", "nosuch", "dm:bob:carol", "..", ".", "%2e%2e", "a%00b", "x" * 300]),
    st.text(min_size=1, max_size=40),
)


@REST
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]),
    shape=st.sampled_from(
        [
            "/api/rooms/{0}",
            "/api/rooms/{0}/messages",
            "/api/rooms/{0}/members",
            "/api/rooms/{0}/members/{1}",
            "/api/rooms/{0}/{1}",
            "/api/{0}",
            "/api/rooms/fz/members/{1}/x",
            "/api/rooms/fz/{1}",
        ]
    ),
    first=segments,
    second=segments,
    body=st.one_of(st.none(), json_values.map(encoded)),
)
async def test_any_path_and_method(
    target: RestTarget, method: str, shape: str, first: str, second: str, body: bytes | None
) -> None:
    """Never a 5xx, always the JSON error body; and nothing is changed in fz or secret."""
    path = shape.format(seg(first), seg(second))
    reply = await target.call(method, path, data=body)
    if method == "HEAD":
        return
    assert reply.status in (200, 201, 204, 400, 403, 404, 405, 409, 413), (method, path, reply)


async def test_fuzzed_paths_changed_nothing(target: RestTarget) -> None:
    """A deterministic rerun of the dangerous shapes: DELETE and POST on foreign rooms."""
    for first in ("secret", "nosuch", "dm:bob:carol"):
        for second in ("bob", "carol", "alice"):
            await target.call("DELETE", f"/api/rooms/{seg(first)}/members/{second}")
        await target.call("POST", f"/api/rooms/{seg(first)}/members", data=b'{"user": "alice"}')
    status, room = await target.cluster.api("bob").call("GET", "/api/rooms/secret")
    assert status == 200 and sorted(room["members"]) == ["bob", "carol"], room


@REST
@given(
    path=st.sampled_from(["/api/rooms", "/api/rooms/fz/messages", "/api/rooms/fz/members"]),
    size=st.one_of(
        st.integers(MAX_REQUEST_BYTES - 16, MAX_REQUEST_BYTES + 16),
        st.integers(MAX_REQUEST_BYTES + 1, 4 * MAX_REQUEST_BYTES),
    ),
    chunked=st.booleans(),
)
async def test_huge_bodies_are_refused_with_413(
    target: RestTarget, path: str, size: int, chunked: bool
) -> None:
    head = b'{"id": "big", "client_id": "big", "body": "b", "user": "bob", "pad": "'
    payload = head + b"p" * (size - len(head) - 2) + b'"}'
    assert len(payload) == size

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    node = target.cluster.nodes[0]
    async with target.cluster.http.post(
        node.url + path,
        data=stream() if chunked else payload,
        headers={"Authorization": f"Bearer {token('alice')}"},
    ) as resp:
        raw = await resp.read()
        reply = Reply(resp.status, orjson.loads(raw) if raw else None, raw, resp.content_type)
    check_reply(reply, "POST", path)
    if size > MAX_REQUEST_BYTES:
        assert reply.status == 413, (size, chunked, reply.raw[:200])
    else:
        # under the cap: an ordinary answer (the id is taken after the first success)
        assert reply.status in (200, 201, 409, 413), (size, reply.raw[:200])


async def test_requests_without_a_body(target: RestTarget) -> None:
    for path in ("/api/rooms", "/api/rooms/fz/messages", "/api/rooms/fz/members"):
        reply = await target.call("POST", path)
        assert reply.status == 400, (path, reply)


async def test_a_client_gone_mid_body_is_not_a_server_error(tmp_path: Path) -> None:
    """A body cut short of its Content-Length, then the client leaves.

    Nobody is left to answer, so the only trace should be the access log: not
    an ERROR with a traceback per request, which any client could trigger in a
    loop to flood the logs (and which reads like a server fault).
    """
    async with own_cluster("embedded", tmp_path, name="gone") as cluster:
        node = cluster.nodes[0]
        for path in ("/api/rooms", "/api/rooms/fz/messages"):
            _, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token('alice')}\r\n"
                'Content-Length: 100\r\n\r\n{"id": '.encode()
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        assert await healthz(node) == 200
        deadline = asyncio.get_running_loop().time() + 2.0
        while asyncio.get_running_loop().time() < deadline:
            log = node.output()
            if " ERROR " in log:
                break
            await asyncio.sleep(0.1)
        assert " ERROR " not in log and "Traceback" not in log, log[-2500:]
