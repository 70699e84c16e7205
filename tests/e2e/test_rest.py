"""Every REST endpoint of PROTOCOL.md, on both backends, and REST together with WebSocket."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness import Api, Cluster

ROOM_KEYS = {"id", "name", "members"}
SUMMARY_KEYS = ROOM_KEYS | {"head", "last_read", "unread"}
ACK_KEYS = {"room", "client_id", "id", "seq", "ts"}
MESSAGE_KEYS = {"room", "id", "seq", "sender", "body", "ts", "client_id"}


def room_id(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error_body(body: Any, code: str | None = None) -> None:
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err["code"], str) and isinstance(err["message"], str), body
    if code is not None:
        assert err["code"] == code, body


async def post_message(api: Api, room: str, body: str, client_id: str | None = None) -> Any:
    status, ack = await api.call(
        "POST",
        f"/api/rooms/{room}/messages",
        {"client_id": client_id or uuid.uuid4().hex, "body": body},
    )
    assert status == 201, (status, ack)
    return ack


async def rest_fill(cluster: Cluster, room: str, users: list[str], per_user: int) -> list[Any]:
    """Messages posted over REST by several users (each under the default burst); acks by seq."""

    async def one_user(user: str) -> list[Any]:
        api = cluster.api(user)
        return list(
            await asyncio.gather(*(post_message(api, room, f"{user}-{i}") for i in range(per_user)))
        )

    acks = [a for batch in await asyncio.gather(*(one_user(u) for u in users)) for a in batch]
    acks.sort(key=lambda a: a["seq"])
    return acks


async def eventually(check: Callable[[], Awaitable[bool]], wait_s: float = 5.0) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


async def summary(api: Api, room: str) -> dict[str, Any]:
    status, rooms = await api.call("GET", "/api/rooms")
    assert status == 200, rooms
    found: dict[str, Any] = next(r for r in rooms if r["id"] == room)
    return found


# POST /api/rooms ---------------------------------------------------------------------------------


async def test_create_room(cluster: Cluster) -> None:
    api = cluster.api("alice")
    room = room_id("general")
    status, body = await api.call(
        "POST", "/api/rooms", {"id": room, "name": "General chat", "members": ["bob", "carol"]}
    )
    assert status == 201, body
    assert ROOM_KEYS <= set(body)
    assert body["id"] == room and body["name"] == "General chat"
    assert sorted(body["members"]) == ["alice", "bob", "carol"]
    # the name defaults to something (the id); the creator alone is a member
    lone = room_id("lone")
    status, body = await api.call("POST", "/api/rooms", {"id": lone})
    assert status == 201, body
    assert body["members"] == ["alice"]
    assert isinstance(body["name"], str) and body["name"]
    # the creator listing themself does not make them a member twice
    status, body = await api.call("POST", "/api/rooms", {"id": room_id(), "members": ["alice"]})
    assert status == 201 and body["members"] == ["alice"]


async def test_create_room_conflict(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    for user in ("alice", "bob", "mallory"):
        status, body = await cluster.api(user).call("POST", "/api/rooms", {"id": room})
        assert status == 409, (user, body)
        assert_error_body(body, "conflict")
    # the existing room is unchanged
    status, got = await cluster.api("alice").call("GET", f"/api/rooms/{room}")
    assert status == 200 and sorted(got["members"]) == ["alice", "bob"]
    status, _ = await cluster.api("mallory").call("GET", f"/api/rooms/{room}")
    assert status == 404


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "bad id"},
        {"id": ""},
        {"id": "a" * 65},
        {"id": "dm:alice:bob"},
        {"id": "ünïcode"},
        {"id": "semi;colon"},
        {"id": 5},
        {"name": "no id"},
        {"id": "okid", "members": "bob"},
        {"id": "okid", "members": [5]},
        {"id": "okid", "members": ["not a user"]},
        {"id": "okid", "name": 7},
    ],
    ids=lambda p: repr(p)[:40],
)
async def test_create_room_bad_request(cluster: Cluster, payload: dict[str, Any]) -> None:
    api = cluster.api("alice")
    status, body = await api.call("POST", "/api/rooms", payload)
    assert status == 400, body
    assert_error_body(body, "bad_request")
    # and nothing was created
    status, rooms = await api.call("GET", "/api/rooms")
    assert status == 200 and rooms == []


async def test_create_room_body_not_json(cluster: Cluster) -> None:
    api = cluster.api("alice")
    for data in ("not json", "[1, 2]", ""):
        status, body = await api.call(
            "POST", "/api/rooms", data=data, headers={"Content-Type": "application/json"}
        )
        assert status == 400, (data, body)
        assert_error_body(body, "bad_request")


# GET /api/rooms ----------------------------------------------------------------------------------


async def test_list_rooms_with_head_last_read_unread(cluster: Cluster) -> None:
    room = room_id("chat")
    quiet = room_id("quiet")
    await cluster.api("alice").create_room(room, ["bob"])
    await cluster.api("alice").create_room(quiet, ["bob"])
    await cluster.api("carol").create_room(room_id("carols"), [])
    status, rooms = await cluster.api("bob").call("GET", "/api/rooms")
    assert status == 200
    assert sorted(r["id"] for r in rooms) == sorted([room, quiet])
    for r in rooms:
        assert SUMMARY_KEYS <= set(r), r
        assert r["head"] == -1 and r["unread"] == 0
        assert r["last_read"] in (-1, None)
        assert sorted(r["members"]) == ["alice", "bob"]
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    a = [await alice.send_message(room, f"a{i}") for i in range(3)]
    b = [await bob.send_message(room, f"b{i}") for i in range(2)]
    bob_view = await summary(cluster.api("bob"), room)
    assert bob_view["head"] == b[-1]["seq"]
    assert bob_view["unread"] == 3  # only the others' messages count
    alice_view = await summary(cluster.api("alice"), room)
    assert alice_view["unread"] == 2 and alice_view["head"] == b[-1]["seq"]
    # bob reads up to alice's second message: one of alice's is left unread
    await bob.send(type="read", room=room, seq=a[1]["seq"])

    async def bob_read() -> bool:
        view = await summary(cluster.api("bob"), room)
        return bool(view["last_read"] == a[1]["seq"])

    assert await eventually(bob_read)
    bob_view = await summary(cluster.api("bob"), room)
    assert bob_view["unread"] == 1 and bob_view["last_read"] == a[1]["seq"]
    # bob reads everything
    await bob.send(type="read", room=room, seq=b[-1]["seq"])

    async def all_read() -> bool:
        view = await summary(cluster.api("bob"), room)
        return bool(view["unread"] == 0)

    assert await eventually(all_read)
    # new messages from alice count again; bob's own do not
    await alice.send_message(room, "new")
    await bob.send_message(room, "mine")
    bob_view = await summary(cluster.api("bob"), room)
    assert bob_view["unread"] == 1
    # alice's view is independent of bob's reads
    assert (await summary(cluster.api("alice"), room))["unread"] == 3
    assert (await summary(cluster.api("bob"), quiet))["head"] == -1


async def test_dm_room_with_messages_is_listed(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    ack = await alice.send_message("dm:alice:bob", "psst")

    async def listed() -> bool:
        status, rooms = await cluster.api("bob").call("GET", "/api/rooms")
        return status == 200 and any(r["id"] == "dm:alice:bob" for r in rooms)

    assert await eventually(listed), "the DM room never showed up in bob's rooms"
    dm = await summary(cluster.api("bob"), "dm:alice:bob")
    assert sorted(dm["members"]) == ["alice", "bob"]
    assert dm["head"] == ack["seq"] and dm["unread"] == 1
    status, rooms = await cluster.api("carol").call("GET", "/api/rooms")
    assert status == 200 and rooms == []
    bob = await cluster.connect("bob")
    assert "dm:alice:bob" in bob.frames[0]["rooms"]


# GET /api/rooms/{id} -----------------------------------------------------------------------------


async def test_get_room_and_404_for_non_members_with_the_same_body(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    status, body = await cluster.api("bob").call("GET", f"/api/rooms/{room}")
    assert status == 200, body
    assert body["id"] == room and sorted(body["members"]) == ["alice", "bob"]
    assert isinstance(body["name"], str)
    answers = []
    for user, rid in [
        ("mallory", room),
        ("mallory", room_id("nosuch")),
        ("alice", room_id("nosuch")),
        ("mallory", "dm:alice:bob"),
        ("alice", "dm:bob:alice"),  # not byte-ordered: not a room
        ("alice", "dm:alice:alice"),
    ]:
        status, body = await cluster.api(user).call("GET", f"/api/rooms/{rid}")
        assert status == 404, (user, rid, body)
        assert_error_body(body, "not_found")
        answers.append(body)
    assert all(a == answers[0] for a in answers), answers
    # a DM room is there for its two members
    status, body = await cluster.api("bob").call("GET", "/api/rooms/dm:alice:bob")
    assert status == 200, body
    assert sorted(body["members"]) == ["alice", "bob"]


async def test_every_room_endpoint_gives_one_404_for_foreign_and_missing_rooms(
    cluster: Cluster,
) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    await post_message(cluster.api("alice"), room, "secret")
    mallory = cluster.api("mallory")
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/api/rooms/{}", None),
        ("GET", "/api/rooms/{}/messages", None),
        ("GET", "/api/rooms/{}/messages?limit=5&before=3", None),
        ("POST", "/api/rooms/{}/messages", {"client_id": "m1", "body": "let me in"}),
        ("POST", "/api/rooms/{}/members", {"user": "mallory"}),
        ("DELETE", "/api/rooms/{}/members/bob", None),
        ("DELETE", "/api/rooms/{}/members/mallory", None),
    ]
    for method, path, payload in calls:
        foreign = await mallory.call(method, path.format(room), payload)
        missing = await mallory.call(method, path.format(room_id("nosuch")), payload)
        assert foreign[0] == 404, (method, path, foreign)
        assert foreign == missing, (method, path, foreign, missing)
        assert_error_body(foreign[1], "not_found")
    # nothing changed: mallory is not in, bob still is, no message from mallory
    _, got = await cluster.api("alice").call("GET", f"/api/rooms/{room}")
    assert sorted(got["members"]) == ["alice", "bob"]
    _, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
    assert [m["body"] for m in page["messages"]] == ["secret"]


# POST /api/rooms/{id}/members --------------------------------------------------------------------


async def test_members_may_add_and_the_added_user_can_subscribe(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    await post_message(cluster.api("alice"), room, "before carol")
    carol = await cluster.connect("carol")
    err = await carol.error("subscribe", room=room)
    assert err["code"] == "not_member"
    # bob is a member, not the owner: members may add
    status, body = await cluster.api("bob").call(
        "POST", f"/api/rooms/{room}/members", {"user": "carol"}
    )
    assert status in (200, 201), body
    assert sorted(body["members"]) == ["alice", "bob", "carol"]
    _sub, hist = await carol.subscribe(room)
    assert [m["body"] for m in hist["messages"]] == ["before carol"]
    ack = await post_message(cluster.api("alice"), room, "welcome carol")
    got = await carol.expect("message", room=room, id=ack["id"])
    assert got["body"] == "welcome carol"
    status, got_room = await cluster.api("carol").call("GET", f"/api/rooms/{room}")
    assert status == 200 and "carol" in got_room["members"]
    assert room in [r["id"] for r in (await cluster.api("carol").call("GET", "/api/rooms"))[1]]
    fresh = await cluster.connect("carol")
    assert room in fresh.frames[0]["rooms"]
    # carol, now a member, may add too; adding again is harmless
    status, body = await cluster.api("carol").call(
        "POST", f"/api/rooms/{room}/members", {"user": "dave"}
    )
    assert status in (200, 201), body
    status, body = await cluster.api("carol").call(
        "POST", f"/api/rooms/{room}/members", {"user": "dave"}
    )
    assert status in (200, 201), body
    assert sorted(body["members"]) == ["alice", "bob", "carol", "dave"]


async def test_add_member_bad_requests(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, [])
    api = cluster.api("alice")
    for payload in ({}, {"user": 5}, {"user": "not valid!"}, {"user": ""}):
        status, body = await api.call("POST", f"/api/rooms/{room}/members", payload)
        assert status == 400, (payload, body)
        assert_error_body(body, "bad_request")
    status, body = await api.call("POST", "/api/rooms/dm:alice:bob/members", {"user": "carol"})
    assert status == 400, body
    assert_error_body(body, "bad_request")


# DELETE /api/rooms/{id}/members/{user} -----------------------------------------------------------


async def test_remove_members_owner_self_and_forbidden(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob", "carol", "dave"])
    # a member who is not the owner may not remove someone else
    status, body = await cluster.api("bob").call("DELETE", f"/api/rooms/{room}/members/dave")
    assert status == 403, body
    assert_error_body(body)
    status, body = await cluster.api("bob").call("DELETE", f"/api/rooms/{room}/members/alice")
    assert status == 403, body
    # the owner may remove anyone
    status, body = await cluster.api("alice").call("DELETE", f"/api/rooms/{room}/members/dave")
    assert 200 <= status < 300, body
    # a user may remove themself
    status, body = await cluster.api("carol").call("DELETE", f"/api/rooms/{room}/members/carol")
    assert 200 <= status < 300, body
    status, got = await cluster.api("alice").call("GET", f"/api/rooms/{room}")
    assert sorted(got["members"]) == ["alice", "bob"]
    for gone in ("carol", "dave"):
        status, body = await cluster.api(gone).call("GET", f"/api/rooms/{room}")
        assert status == 404, body
        status, rooms = await cluster.api(gone).call("GET", "/api/rooms")
        assert room not in [r["id"] for r in rooms]
        status, body = await cluster.api(gone).call(
            "POST", f"/api/rooms/{room}/messages", {"client_id": "x", "body": "still here?"}
        )
        assert status == 404, body
    # a removed user is not a member anymore: can't remove others or re-add themself
    status, body = await cluster.api("dave").call(
        "POST", f"/api/rooms/{room}/members", {"user": "dave"}
    )
    assert status == 404, body


async def test_removed_member_stops_receiving(cluster: Cluster) -> None:
    room = room_id()
    other = room_id("other")
    await cluster.api("alice").create_room(room, ["bob"])
    await cluster.api("alice").create_room(other, ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    await bob.subscribe(other)
    first = await alice.send_message(room, "you are still here")
    await bob.expect("message", room=room, id=first["id"])
    status, body = await cluster.api("alice").call("DELETE", f"/api/rooms/{room}/members/bob")
    assert 200 <= status < 300, body
    unsub = await bob.expect("unsubscribed", room=room)
    assert unsub["room"] == room
    mark = len(bob.frames)
    gone = await alice.send_message(room, "bob is gone")
    await alice.send(type="typing", room=room)
    still = await alice.send_message(other, "other room still flows")
    await bob.expect("message", room=other, id=still["id"])
    await bob.drain(0.7)
    leaked = [f for f in bob.frames[mark:] if f.get("room") == room]
    assert leaked == [], leaked
    assert gone["id"] not in [m["id"] for m in bob.messages(room)]
    frames: list[dict[str, Any]] = [
        {"type": "send", "room": room, "client_id": "after", "body": "hello?"},
        {"type": "subscribe", "room": room},
        {"type": "history", "room": room},
        {"type": "typing", "room": room},
        {"type": "read", "room": room, "seq": gone["seq"]},
    ]
    for frame in frames:
        err = await bob.error(**frame)
        assert err["code"] == "not_member", (frame, err)
    await bob.drain(0.3)
    status, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
    assert "hello?" not in [m["body"] for m in page["messages"]]


async def test_removed_member_on_another_node_stops_receiving(two_nodes: Cluster) -> None:
    room = room_id()
    await two_nodes.api("alice").create_room(room, ["bob"])
    alice = await two_nodes.connect("alice", node=0)
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe(room)
    first = await alice.send_message(room, "hi")
    await bob.expect("message", room=room, id=first["id"])
    ok = await bob.send_message(room, "hi back")  # bob's node now knows he is a member
    assert ok["room"] == room
    status, _ = await two_nodes.api("alice", node=0).call(
        "DELETE", f"/api/rooms/{room}/members/bob"
    )
    assert 200 <= status < 300
    await bob.expect("unsubscribed", room=room, timeout=15)
    mark = len(bob.frames)
    await alice.send_message(room, "after removal")
    await bob.drain(1.0)
    assert [f for f in bob.frames[mark:] if f.get("room") == room] == []
    err = await bob.error("send", room=room, client_id="late", body="still here?")
    assert err["code"] == "not_member"
    status, _ = await two_nodes.api("bob", node=1).call("GET", f"/api/rooms/{room}")
    assert status == 404


# GET /api/rooms/{id}/messages --------------------------------------------------------------------


async def test_get_messages_paging(cluster: Cluster) -> None:
    room = room_id()
    users = ["u1", "u2", "u3"]
    await cluster.api("alice").create_room(room, users)
    acks = await rest_fill(cluster, room, users, 25)
    api = cluster.api("alice")
    status, page = await api.call("GET", f"/api/rooms/{room}/messages")
    assert status == 200, page
    assert page["room"] == room
    assert [m["id"] for m in page["messages"]] == [a["id"] for a in acks[-50:]]
    assert page["has_more"] is True
    for m in page["messages"]:
        assert MESSAGE_KEYS <= set(m), m
        assert m["room"] == room and m["sender"] in users
    # walk back 30 at a time
    seen: list[str] = []
    before: int | None = None
    sizes: list[int] = []
    flags: list[bool] = []
    while True:
        query = "limit=30" + ("" if before is None else f"&before={before}")
        status, page = await api.call("GET", f"/api/rooms/{room}/messages?{query}")
        assert status == 200, page
        msgs = page["messages"]
        seqs = [m["seq"] for m in msgs]
        assert seqs == sorted(seqs)
        if before is not None:
            assert all(s < before for s in seqs)
        seen = [m["id"] for m in msgs] + seen
        sizes.append(len(msgs))
        flags.append(page["has_more"])
        if not page["has_more"]:
            break
        before = seqs[0]
        assert len(sizes) < 10
    assert sizes == [30, 30, 15] and flags == [True, True, False]
    assert seen == [a["id"] for a in acks]
    # the same page as the history frame
    ws = await cluster.connect("alice")
    frame = await ws.request("history", "history", room=room, before=acks[40]["seq"], limit=7)
    status, page = await api.call(
        "GET", f"/api/rooms/{room}/messages?before={acks[40]['seq']}&limit=7"
    )
    assert page["messages"] == frame["messages"] and page["has_more"] == frame["has_more"]


async def test_get_messages_bad_query(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, [])
    for query in ("limit=0", "limit=101", "limit=1000", "limit=abc", "before=x", "before=-1"):
        status, body = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages?{query}")
        assert status == 400, (query, body)
        assert_error_body(body, "bad_request")
    status, body = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages?limit=100")
    assert status == 200 and body["messages"] == [] and body["has_more"] is False


# POST /api/rooms/{id}/messages -------------------------------------------------------------------


async def test_post_message_ack_and_idempotency(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    api = cluster.api("alice")
    status, ack = await api.call(
        "POST", f"/api/rooms/{room}/messages", {"client_id": "rest-1", "body": "  hello rest \n"}
    )
    assert status == 201, ack
    assert ACK_KEYS <= set(ack), ack
    assert ack["room"] == room and ack["client_id"] == "rest-1"
    assert isinstance(ack["seq"], int) and ack["seq"] >= 0
    assert isinstance(ack["id"], str) and ack["id"]
    status2, again = await api.call(
        "POST", f"/api/rooms/{room}/messages", {"client_id": "rest-1", "body": "  hello rest \n"}
    )
    assert status2 in (200, 201), again
    assert {k: again[k] for k in ACK_KEYS} == {k: ack[k] for k in ACK_KEYS}
    # concurrent retries: one message still
    results = await asyncio.gather(
        *(
            api.call("POST", f"/api/rooms/{room}/messages", {"client_id": "rest-2", "body": "x"})
            for _ in range(5)
        )
    )
    assert {r[0] for r in results} <= {200, 201}
    assert len({(r[1]["id"], r[1]["seq"]) for r in results}) == 1
    status, page = await api.call("GET", f"/api/rooms/{room}/messages")
    assert [m["client_id"] for m in page["messages"]] == ["rest-1", "rest-2"]
    assert page["messages"][0]["body"] == "hello rest"
    assert page["messages"][0]["sender"] == "alice"
    # the same client_id over WebSocket is the same message too
    ws = await cluster.connect("alice")
    ws_ack = await ws.send_message(room, "hello rest", client_id="rest-1")
    assert (ws_ack["id"], ws_ack["seq"]) == (ack["id"], ack["seq"])


async def test_post_message_bad_requests(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    api = cluster.api("alice")
    for payload in (
        {"body": "no client id"},
        {"client_id": "c"},
        {"client_id": "", "body": "x"},
        {"client_id": "c" * 65, "body": "x"},
        {"client_id": 5, "body": "x"},
        {"client_id": "c", "body": 5},
        {"client_id": "c", "body": "   "},
    ):
        status, body = await api.call("POST", f"/api/rooms/{room}/messages", payload)
        assert status == 400, (payload, body)
        assert_error_body(body, "bad_request")
    status, body = await api.call(
        "POST", f"/api/rooms/{room}/messages", {"client_id": "big", "body": "x" * 4097}
    )
    assert status in (400, 413), body
    assert_error_body(body)
    assert body["error"]["code"] in ("too_large", "bad_request")
    status, body = await api.call(
        "POST", f"/api/rooms/{room}/messages", {"client_id": "max", "body": "x" * 4096}
    )
    assert status == 201, body
    status, page = await api.call("GET", f"/api/rooms/{room}/messages")
    assert [m["client_id"] for m in page["messages"]] == ["max"]


# REST and WebSocket together ---------------------------------------------------------------------


async def test_rest_post_reaches_websocket_and_ws_send_reaches_rest(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    ack = await post_message(cluster.api("alice"), room, "via rest", "from-rest")
    got = await bob.expect("message", room=room, id=ack["id"])
    assert got["body"] == "via rest" and got["sender"] == "alice"
    assert got["seq"] == ack["seq"] and got["client_id"] == "from-rest" and got["ts"] == ack["ts"]
    ws_ack = await bob.send_message(room, "via websocket")

    async def in_history() -> bool:
        status, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
        return status == 200 and ws_ack["id"] in [m["id"] for m in page["messages"]]

    assert await eventually(in_history)
    _status, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
    assert [m["body"] for m in page["messages"]] == ["via rest", "via websocket"]
    last = page["messages"][-1]
    assert last["sender"] == "bob" and last["seq"] == ws_ack["seq"] and last["ts"] == ws_ack["ts"]
    await bob.drain(0.4)
    assert [m["id"] for m in bob.messages(room)] == [ack["id"], ws_ack["id"]]


async def test_rest_history_after_persistence(cluster: Cluster) -> None:
    """Messages still show once the node restarts (they were persisted, not only in memory)."""
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob"])
    bob = await cluster.connect("bob")
    acks = [await bob.send_message(room, f"keep {i}") for i in range(3)]
    await asyncio.sleep(1.0)  # let the persistence worker write
    await bob.close()
    await cluster.nodes[0].restart()
    status, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
    assert status == 200, page
    assert [m["id"] for m in page["messages"]] == [a["id"] for a in acks]


# health, metrics, openapi ------------------------------------------------------------------------


async def test_healthz_readyz_without_auth(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(cluster.nodes[0].url + path) as resp:
                assert resp.status == 200, (path, await resp.text())


async def test_metrics_is_prometheus_text(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, [])
    await post_message(cluster.api("alice"), room, "count me")
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.nodes[0].url + "/metrics") as resp,
    ):
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    assert "parley_" in text
    assert "# TYPE parley_" in text and "# HELP parley_" in text
    samples = [
        line
        for line in text.splitlines()
        if line.startswith("parley_") and not line.startswith("#")
    ]
    assert samples
    for line in samples:
        name, _, value = line.rpartition(" ")
        assert name
        float(value)  # every sample has a numeric value


async def test_openapi_document_lists_every_api_path(cluster: Cluster) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.nodes[0].url + "/api/openapi.json") as resp,
    ):
        assert resp.status == 200
        doc = await resp.json()
    assert str(doc["openapi"]).startswith("3.")
    assert doc["info"]["title"]
    paths = doc["paths"]
    expected = {
        "/api/rooms": {"get", "post"},
        "/api/rooms/{id}": {"get"},
        "/api/rooms/{id}/members": {"post"},
        "/api/rooms/{id}/members/{user}": {"delete"},
        "/api/rooms/{id}/messages": {"get", "post"},
    }
    for path, methods in expected.items():
        assert path in paths, (path, sorted(paths))
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    messages_get = paths["/api/rooms/{id}/messages"]["get"]
    names = {p["name"] for p in messages_get.get("parameters", []) if "name" in p}
    assert {"before", "limit"} <= names, names


async def test_openapi_document_lists_the_dev_token_endpoint(cluster: Cluster) -> None:
    """PROTOCOL.md names `POST /api/dev/token` (development mode); the document should too."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(cluster.nodes[0].url + "/api/openapi.json") as resp,
    ):
        doc = await resp.json()
    assert "post" in doc["paths"].get("/api/dev/token", {}), sorted(doc["paths"])


async def test_dm_room_over_rest(cluster: Cluster) -> None:
    dm = "dm:alice:bob"
    ack = await post_message(cluster.api("alice"), dm, "hi bob", "dm-1")
    assert ack["room"] == dm
    status, page = await cluster.api("bob").call("GET", f"/api/rooms/{dm}/messages")
    assert status == 200, page
    assert [(m["sender"], m["body"]) for m in page["messages"]] == [("alice", "hi bob")]
    for user in ("carol",):
        status, body = await cluster.api(user).call("GET", f"/api/rooms/{dm}/messages")
        assert status == 404, body
        status, body = await cluster.api(user).call(
            "POST", f"/api/rooms/{dm}/messages", {"client_id": "x", "body": "intrude"}
        )
        assert status == 404, body
    # the reversed name is not a room
    status, body = await cluster.api("alice").call(
        "POST", "/api/rooms/dm:bob:alice/messages", {"client_id": "r", "body": "reversed"}
    )
    assert status == 404, body
    # members of a DM room can't be changed
    status, body = await cluster.api("alice").call("DELETE", f"/api/rooms/{dm}/members/bob")
    assert 400 <= status < 500 and status != 401, body
    status, page = await cluster.api("bob").call("GET", f"/api/rooms/{dm}/messages")
    assert [m["client_id"] for m in page["messages"]] == ["dm-1"]


async def test_removed_then_readded_member_receives_again(cluster: Cluster) -> None:
    room = room_id()
    await cluster.api("alice").create_room(room, ["bob", "bob"])
    status, got = await cluster.api("alice").call("GET", f"/api/rooms/{room}")
    assert sorted(got["members"]) == ["alice", "bob"]
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    status, _ = await cluster.api("alice").call("DELETE", f"/api/rooms/{room}/members/bob")
    assert 200 <= status < 300
    await bob.expect("unsubscribed", room=room)
    assert (await bob.error("subscribe", room=room))["code"] == "not_member"
    status, body = await cluster.api("alice").call(
        "POST", f"/api/rooms/{room}/members", {"user": "bob"}
    )
    assert status in (200, 201), body
    _, hist = await bob.subscribe(room)
    assert hist["messages"] == []
    ack = await alice.send_message(room, "welcome back")
    got_msg = await bob.expect("message", room=room, id=ack["id"])
    assert got_msg["body"] == "welcome back"
    mine = await bob.send_message(room, "thanks")
    await alice.subscribe(room)
    status, page = await cluster.api("alice").call("GET", f"/api/rooms/{room}/messages")
    assert [m["id"] for m in page["messages"]] == [ack["id"], mine["id"]]


async def test_every_rest_error_has_the_json_error_body(cluster: Cluster) -> None:
    api = cluster.api("alice")
    status, body = await api.call("GET", "/api/no-such-endpoint")
    assert status == 404, body
    assert_error_body(body, "not_found")
    status, body = await api.call("PUT", "/api/rooms")
    assert status == 405, body
    assert_error_body(body)
    status, body = await api.call("PATCH", f"/api/rooms/{room_id()}")
    assert status in (404, 405), body
    assert_error_body(body)
    # The socket's route answers its own errors, in the same body.
    status, body = await api.call("POST", "/ws")
    assert status == 405, body
    assert_error_body(body)
    status, body = await api.call("GET", "/ws")  # a token, but no upgrade
    assert status == 400, body
    assert_error_body(body, "bad_request")
