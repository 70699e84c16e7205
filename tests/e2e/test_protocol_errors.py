"""Every error code and close code of PROTOCOL.md, on real nodes.

An error never closes the connection unless the table says so: after each
non-closing error the test checks that the connection still answers a ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster, WsClient


def room_id(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def still_open(client: WsClient) -> None:
    """The connection still works: a ping gets its pong."""
    ref = f"alive-{uuid.uuid4().hex[:8]}"
    await client.send(type="ping", ref=ref)
    await client.expect("pong", ref=ref)


async def next_error(client: WsClient) -> dict[str, Any]:
    """The next error frame (for frames that cannot carry a ref)."""
    return await client.expect("error")


def assert_error(frame: dict[str, Any], code: str, ref: str | None) -> None:
    assert frame["type"] == "error"
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"], frame
    if ref is not None:
        assert frame["ref"] == ref


@contextlib.asynccontextmanager
async def node_with(tmp_path: Path, name: str, **extra: str) -> AsyncIterator[Cluster]:
    """One embedded node with extra PARLEY_* settings, as a one-node Cluster."""
    async with own_cluster("embedded", tmp_path, name=name, settings=extra) as cluster:
        yield cluster


# bad_request -------------------------------------------------------------------

# frames that are not an object at all: no ref can come back
NOT_OBJECTS = ["not json", "{", "[1, 2, 3]", '[{"type": "ping"}]', '"ping"', "42", "null", ""]

# (frame, why) with a ref each
BAD_FIELDS: list[dict[str, Any]] = [
    {},  # no type
    {"type": 5},
    {"type": None},
    {"type": "subscribe"},
    {"type": "subscribe", "room": 5},
    {"type": "subscribe", "room": ["general"]},
    {"type": "subscribe", "room": "general", "since": "x"},
    {"type": "subscribe", "room": "general", "since": 1.5},
    {"type": "subscribe", "room": "general", "since": True},
    {"type": "unsubscribe"},
    {"type": "unsubscribe", "room": 5},
    {"type": "send", "room": "general", "client_id": "c1"},
    {"type": "send", "room": "general", "body": "hi"},
    {"type": "send", "client_id": "c1", "body": "hi"},
    {"type": "send", "room": 5, "client_id": "c1", "body": "hi"},
    {"type": "send", "room": "general", "client_id": 7, "body": "hi"},
    {"type": "send", "room": "general", "client_id": "c1", "body": 5},
    {"type": "send", "room": "general", "client_id": "c1", "body": {"text": "hi"}},
    {"type": "send", "room": "general", "client_id": "", "body": "hi"},
    {"type": "send", "room": "general", "client_id": "c" * 65, "body": "hi"},
]

BAD_FIELDS_2: list[dict[str, Any]] = [
    {"type": "history"},
    {"type": "history", "room": 5},
    {"type": "history", "room": "general", "limit": 1000},
    {"type": "history", "room": "general", "limit": 101},
    {"type": "history", "room": "general", "limit": 0},
    {"type": "history", "room": "general", "limit": -5},
    {"type": "history", "room": "general", "limit": "10"},
    {"type": "history", "room": "general", "before": "x"},
    {"type": "history", "room": "general", "before": -1},
    {"type": "typing"},
    {"type": "typing", "room": 5},
    {"type": "read", "room": "general"},
    {"type": "read", "room": "general", "seq": "3"},
    {"type": "read", "room": "general", "seq": -1},
    {"type": "read", "room": "general", "seq": False},
    {"type": "read", "seq": 3},
]


async def test_bad_request_not_an_object(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    for text in NOT_OBJECTS:
        await alice.send_raw(text)
        err = await next_error(alice)
        assert_error(err, "bad_request", None)
        await still_open(alice)


async def test_bad_request_binary_frame(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    await alice.ws.send_bytes(orjson.dumps({"type": "ping", "ref": "bin"}))
    err = await next_error(alice)
    assert_error(err, "bad_request", None)
    # the binary ping was not answered as a ping
    assert [f for f in alice.frames if f.get("type") == "pong"] == []
    await still_open(alice)


@pytest.mark.parametrize("cases", [BAD_FIELDS, BAD_FIELDS_2], ids=["part1", "part2"])
async def test_bad_request_missing_fields_and_wrong_types(
    cluster: Cluster, cases: list[dict[str, Any]]
) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe("general")
    for i, frame in enumerate(cases):
        ref = f"bad{i}"
        await alice.send(**frame, ref=ref)
        err = await alice.expect("error", ref=ref)
        assert err["code"] == "bad_request", (frame, err)
        assert_error(err, "bad_request", ref)
        await still_open(alice)
    # none of the malformed sends made it into the room
    await bob.drain(0.5)
    assert bob.messages("general") == []
    assert [f for f in alice.frames if f.get("type") in ("ack", "subscribed", "history")] == []


async def test_bad_request_empty_body_after_trimming(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe("general")
    for i, body in enumerate(["", " ", "   \n\t  ", "\r\n"]):
        err = await alice.error("send", room="general", client_id=f"e{i}", body=body)
        assert_error(err, "bad_request", None)
        await still_open(alice)
    await bob.drain(0.5)
    assert bob.messages("general") == []
    # a body of one char after trimming is fine
    ack = await alice.send_message("general", "  x  ")
    assert (await bob.expect("message", room="general", id=ack["id"]))["body"] == "x"


async def test_bad_ref_is_bad_request(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    await alice.send(type="ping", ref=5)
    assert_error(await next_error(alice), "bad_request", None)
    await alice.send(type="ping", ref="r" * 65)
    assert_error(await next_error(alice), "bad_request", None)
    await still_open(alice)


# unknown_type --------------------------------------------------------------------


async def test_unknown_type(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    for i, kind in enumerate(["hello", "message", "pong", "SEND", "subscribe ", "join", "x" * 200]):
        ref = f"u{i}"
        await alice.send(type=kind, ref=ref)
        err = await alice.expect("error", ref=ref)
        assert_error(err, "unknown_type", ref)
        await still_open(alice)


# not_member ----------------------------------------------------------------------


OPERATIONS: list[dict[str, Any]] = [
    {"type": "subscribe"},
    {"type": "subscribe", "since": -1},
    {"type": "send", "client_id": "nm", "body": "let me in"},
    {"type": "history"},
    {"type": "history", "before": 10, "limit": 5},
    {"type": "typing"},
    {"type": "read", "seq": 0},
]


async def test_not_member_same_answer_for_foreign_and_missing_rooms(cluster: Cluster) -> None:
    secret = room_id("secret")
    await cluster.api("bob").create_room(secret, ["carol"])
    bob = await cluster.connect("bob")
    hidden = await bob.send_message(secret, "top secret")
    alice = await cluster.connect("alice")
    rooms = [secret, room_id("nosuch"), "dm:bob:carol", "dm:carol:bob", "dm:alice:alice"]
    for op in OPERATIONS:
        answers: list[dict[str, Any]] = []
        for j, room in enumerate(rooms):
            ref = f"{op['type']}-{j}"
            await alice.send(**op, room=room, ref=ref)
            err = await alice.expect("error", ref=ref)
            assert_error(err, "not_member", ref)
            answers.append({k: v for k, v in err.items() if k != "ref"})
            await still_open(alice)
        assert all(a == answers[0] for a in answers), answers
    await alice.drain(0.5)
    # nothing of the secret room leaked: no subscribed, history, message, typing, ack
    leaked = [
        f for f in alice.frames if f.get("type") not in ("hello", "error", "pong", "presence")
    ]
    assert leaked == []
    assert hidden["id"] not in orjson.dumps(alice.frames).decode()


async def test_not_member_subscribe_then_no_frames_of_that_room(cluster: Cluster) -> None:
    secret = room_id("secret")
    await cluster.api("bob").create_room(secret, [])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    err = await alice.error("subscribe", room=secret)
    assert err["code"] == "not_member"
    await bob.subscribe(secret)
    await bob.send_message(secret, "private")
    await bob.send(type="typing", room=secret)
    await bob.drain(0.3)
    await alice.drain(0.7)
    assert [f for f in alice.frames if f.get("room") == secret] == []
    # the rooms a user is not in are not sent in history either
    hist = await bob.request("history", "history", room=secret)
    assert [m["body"] for m in hist["messages"]] == ["private"]


async def test_not_member_send_is_not_delivered(cluster: Cluster) -> None:
    secret = room_id("secret")
    await cluster.api("bob").create_room(secret, [])
    bob = await cluster.connect("bob")
    await bob.subscribe(secret)
    alice = await cluster.connect("alice")
    err = await alice.error("send", room=secret, client_id="intruder", body="hello?")
    assert_error(err, "not_member", None)
    await bob.drain(0.7)
    assert bob.messages(secret) == []


# too_large -------------------------------------------------------------------------


async def test_too_large_body_is_an_error_and_the_connection_stays(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe("general")
    err = await alice.error("send", room="general", client_id="big", body="x" * 4097)
    assert_error(err, "too_large", None)
    await still_open(alice)
    # chars, not bytes: 4097 three-byte chars are too large, 4096 are fine
    err2 = await alice.error("send", room="general", client_id="big2", body="€" * 4097)
    assert_error(err2, "too_large", None)
    await still_open(alice)
    exact = await alice.send_message("general", "y" * 4096)
    euro = await alice.send_message("general", "€" * 4096)
    # measured after trimming
    padded = await alice.send_message("general", "   " + "z" * 4096 + "   ")
    for ack in (exact, euro, padded):
        await bob.expect("message", room="general", id=ack["id"])
    bodies = [m["body"] for m in bob.messages("general")]
    assert bodies == ["y" * 4096, "€" * 4096, "z" * 4096]
    # a big frame under 64 KiB is an error, not a close
    err3 = await alice.error("send", room="general", client_id="big3", body="w" * 60_000)
    assert_error(err3, "too_large", None)
    await still_open(alice)


async def test_a_frame_of_exactly_64_kib_is_accepted_one_byte_more_closes(
    cluster: Cluster,
) -> None:
    alice = await cluster.connect("alice")
    frame: dict[str, str] = {"type": "ping", "ref": "edge", "pad": ""}
    frame["pad"] = "p" * (64 * 1024 - len(orjson.dumps(frame)))
    assert len(orjson.dumps(frame)) == 64 * 1024
    await alice.send_raw(orjson.dumps(frame).decode())
    assert (await alice.expect("pong", ref="edge"))["type"] == "pong"
    frame["pad"] += "p"
    await alice.send_raw(orjson.dumps(frame).decode())
    assert await alice.wait_closed(10) == 1009


async def test_frame_over_64_kib_closes_with_1009(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe("general")
    frame = orjson.dumps(
        {"type": "send", "room": "general", "client_id": "huge", "body": "h" * (70 * 1024)}
    ).decode()
    assert len(frame.encode()) > 64 * 1024
    await alice.send_raw(frame)
    code = await alice.wait_closed(10)
    assert code == 1009
    await bob.drain(0.5)
    assert bob.messages("general") == []
    # the user can reconnect and go on
    again = await cluster.connect("alice")
    await still_open(again)


# rate_limited ------------------------------------------------------------------------


async def test_rate_limited_then_succeeds_after_waiting(tmp_path: Path) -> None:
    async with node_with(tmp_path, "rl", PARLEY_RATE_LIMIT="5", PARLEY_RATE_BURST="5") as c:
        await c.api("alice").create_room("general", ["bob"])
        alice = await c.connect("alice")
        bob = await c.connect("bob")
        await bob.subscribe("general")
        for i in range(20):
            await alice.send(
                type="send", room="general", client_id=f"c{i}", body=f"b{i}", ref=f"s{i}"
            )
        replies: list[dict[str, Any]] = []
        for i in range(20):
            replies.append(await alice.reply(f"s{i}"))
        acked = [r for r in replies if r["type"] == "ack"]
        limited = [r for r in replies if r["type"] == "error"]
        assert all(r["code"] == "rate_limited" for r in limited), limited
        assert 5 <= len(acked) <= 8, replies
        assert len(limited) >= 12
        assert len(acked) + len(limited) == 20
        await still_open(alice)
        # the limited ones were not delivered
        await bob.drain(0.5)
        assert sorted(m["client_id"] for m in bob.messages("general")) == sorted(
            a["client_id"] for a in acked
        )
        # after waiting, sends succeed again, a retry of a limited client_id too
        await asyncio.sleep(1.2)
        retry_ref = limited[0]["ref"]
        retry_cid = f"c{retry_ref[1:]}"
        ack = await alice.send_message("general", "retried", client_id=retry_cid)
        assert ack["client_id"] == retry_cid
        ack2 = await alice.send_message("general", "later")
        await bob.expect("message", room="general", id=ack2["id"])
        # the limit is per user: bob is not limited by alice's sends
        for i in range(5):
            await bob.send_message("general", f"bob {i}")


async def test_rate_limited_over_rest(tmp_path: Path) -> None:
    async with node_with(tmp_path, "rlr", PARLEY_RATE_LIMIT="5", PARLEY_RATE_BURST="5") as c:
        api = c.api("alice")
        await api.create_room("general")
        statuses: list[int] = []
        bodies: list[Any] = []
        results = await asyncio.gather(
            *(
                api.call("POST", "/api/rooms/general/messages", {"client_id": f"r{i}", "body": "x"})
                for i in range(15)
            )
        )
        for status, body in results:
            statuses.append(status)
            bodies.append(body)
        assert statuses.count(201) >= 5
        assert statuses.count(429) >= 7, statuses
        for status, body in zip(statuses, bodies, strict=True):
            if status == 429:
                assert body["error"]["code"] == "rate_limited"
        await asyncio.sleep(1.2)
        status, body = await api.call(
            "POST", "/api/rooms/general/messages", {"client_id": "after", "body": "ok"}
        )
        assert status == 201, body


# 1008: too many errors ------------------------------------------------------------------


async def test_more_than_50_errors_in_10s_close_with_1008(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    for _ in range(50):
        await alice.send_raw("not json")
    for _ in range(50):
        await next_error(alice)
    await still_open(alice)  # 50 errors are tolerated
    await alice.send_raw("not json")
    code = await alice.wait_closed(10)
    assert code == 1008


async def test_errors_of_every_kind_count_towards_1008(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    kinds: list[dict[str, Any]] = [
        {"type": "nope"},
        {"type": "subscribe", "room": "no-such-room"},
        {"type": "history", "room": "general", "limit": 1000},
    ]
    for i in range(51):
        await alice.send(**kinds[i % 3])
    code = await alice.wait_closed(10)
    assert code == 1008
    errors = [f for f in alice.frames if f.get("type") == "error"]
    assert {e["code"] for e in errors} == {"unknown_type", "not_member", "bad_request"}


async def test_few_errors_spread_out_do_not_close(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    for _ in range(3):
        for _ in range(10):
            await alice.send_raw("[]")
        await still_open(alice)
    assert len([f for f in alice.frames if f.get("type") == "error"]) == 30


# 4409: replaced by a newer connection of the same device ---------------------------------


async def test_same_device_replaces_the_older_connection_with_4409(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    old = await cluster.connect("alice", device="phone")
    await old.subscribe("general")
    new = await cluster.connect("alice", device="phone")
    assert await old.wait_closed(10) == 4409
    await still_open(new)
    await new.subscribe("general")
    ack = await new.send_message("general", "from the new connection")
    await new.expect("message", room="general", id=ack["id"])
    # a third one replaces the second
    newest = await cluster.connect("alice", device="phone")
    assert await new.wait_closed(10) == 4409
    await still_open(newest)


async def test_different_devices_and_no_device_all_stay_open(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    phone = await cluster.connect("alice", device="phone")
    laptop = await cluster.connect("alice", device="laptop")
    plain1 = await cluster.connect("alice")
    plain2 = await cluster.connect("alice")
    bob_phone = await cluster.connect("bob", device="phone")  # same device id, other user
    clients = [phone, laptop, plain1, plain2, bob_phone]
    for c in clients:
        await c.subscribe("general")
    ack = await phone.send_message("general", "everyone")
    for c in clients:
        await c.expect("message", room="general", id=ack["id"])
    await phone.drain(0.5)
    for c in clients:
        assert c.close_code is None
        await still_open(c)


async def test_same_device_on_another_node_is_replaced(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("general", ["bob"])
    old = await two_nodes.connect("alice", node=0, device="tablet")
    await still_open(old)
    new = await two_nodes.connect("alice", node=1, device="tablet")
    assert await old.wait_closed(15) == 4409
    await still_open(new)
    await new.drain(1.0)
    assert new.close_code is None
    await still_open(new)


# errors carry the ref -------------------------------------------------------------------


async def test_every_error_carries_the_clients_ref(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", [])
    alice = await cluster.connect("alice")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "frobnicate"}, "unknown_type"),
        ({"type": "subscribe"}, "bad_request"),
        ({"type": "subscribe", "room": "nope"}, "not_member"),
        ({"type": "send", "room": "nope", "client_id": "a", "body": "b"}, "not_member"),
        ({"type": "send", "room": "general", "client_id": "a", "body": " "}, "bad_request"),
        ({"type": "send", "room": "general", "client_id": "a", "body": "q" * 5000}, "too_large"),
        ({"type": "history", "room": "nope"}, "not_member"),
        ({"type": "typing", "room": "nope"}, "not_member"),
        ({"type": "read", "room": "nope", "seq": 1}, "not_member"),
    ]
    for i, (frame, code) in enumerate(cases):
        ref = f"ref/{i}/{code}"
        await alice.send(**frame, ref=ref)
        err = await alice.expect("error", ref=ref)
        assert_error(err, code, ref)
        await still_open(alice)
    assert all(f.get("ref") for f in alice.frames if f.get("type") == "error")
