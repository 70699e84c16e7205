"""Every client frame of PROTOCOL.md, on the embedded log + SQLite and on Kafka + PostgreSQL.

Each test drives real `parley serve` nodes through WebSocket frames (and REST
where the protocol ties the two together), and checks the replies field by field.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import own_cluster
from tests.harness import Cluster, WsClient

# Users that only write messages: the default rate limit (20/s, burst 40) is per
# user, so a test that needs 120 messages spreads them over several senders.
FILLERS = ("fill0", "fill1", "fill2", "fill3", "fill4", "fill5")
PER_FILLER = 30


def room_id(prefix: str = "room") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_ref() -> str:
    return f"ref-{uuid.uuid4().hex[:12]}"


async def fill(cluster: Cluster, room: str, count: int) -> list[dict[str, Any]]:
    """Write `count` messages (bodies m0..m{count-1}) to a room; their acks in seq order.

    The room must have FILLERS as members. Sends are pipelined, spread over the
    fillers, and retried with the same client_id when rate limited.
    """
    senders = FILLERS[: max(1, -(-count // PER_FILLER))]
    assert len(senders) * PER_FILLER >= count, "too many messages for the fillers"
    clients = [await cluster.connect(u) for u in senders]
    todo = [(i, uuid.uuid4().hex) for i in range(count)]
    acks: list[dict[str, Any]] = []
    for _attempt in range(20):
        sent: list[tuple[WsClient, str, int, str]] = []
        for n, (i, cid) in enumerate(todo):
            client = clients[n % len(clients)]
            ref = new_ref()
            await client.send(type="send", room=room, client_id=cid, body=f"m{i}", ref=ref)
            sent.append((client, ref, i, cid))
        retry: list[tuple[int, str]] = []
        for client, ref, i, cid in sent:
            reply = await client.reply(ref)
            if reply["type"] == "ack":
                acks.append(reply)
            else:
                assert reply["code"] == "rate_limited", reply
                retry.append((i, cid))
        todo = retry
        if not todo:
            break
        await asyncio.sleep(0.5)
    assert not todo, "could not write the messages"
    acks.sort(key=lambda a: a["seq"])
    return acks


async def group(cluster: Cluster, owner: str, members: Sequence[str], prefix: str = "room") -> str:
    room = room_id(prefix)
    await cluster.api(owner).create_room(room, list(members))
    return room


def ids(messages: Sequence[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in messages]


def assert_rfc3339_utc(ts: Any) -> None:
    assert isinstance(ts, str), ts
    parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), ts


def frames_of_room(client: WsClient, room: str) -> list[dict[str, Any]]:
    return [f for f in client.frames if f.get("room") == room]


# subscribe -----------------------------------------------------------------------


async def test_subscribe_empty_room_head_is_minus_one(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    sub, hist = await alice.subscribe(room)
    assert sub["type"] == "subscribed" and sub["room"] == room and sub["head"] == -1
    assert hist["room"] == room and hist["messages"] == [] and hist["has_more"] is False
    kinds = [f["type"] for f in alice.frames if f["type"] != "presence"]
    assert kinds == ["hello", "subscribed", "history"]


async def test_subscribe_gives_head_and_the_50_most_recent_with_has_more(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob", *FILLERS])
    acks = await fill(cluster, room, 60)
    bob = await cluster.connect("bob")
    sub, hist = await bob.subscribe(room)
    assert sub["head"] == acks[-1]["seq"]
    assert hist["has_more"] is True
    assert ids(hist["messages"]) == ids(acks[-50:])
    seqs = [m["seq"] for m in hist["messages"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    for m, ack in zip(hist["messages"], acks[-50:], strict=True):
        assert m["room"] == room
        assert (
            m["seq"] == ack["seq"] and m["ts"] == ack["ts"] and m["client_id"] == ack["client_id"]
        )
        assert m["sender"] in FILLERS and m["body"].startswith("m")
        assert "type" not in m


async def test_subscribe_with_few_messages_has_no_more(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    acks = [await alice.send_message(room, f"hi {i}") for i in range(3)]
    bob = await cluster.connect("bob")
    sub, hist = await bob.subscribe(room)
    assert sub["head"] == acks[-1]["seq"]
    assert ids(hist["messages"]) == ids(acks)
    assert [m["body"] for m in hist["messages"]] == ["hi 0", "hi 1", "hi 2"]
    assert hist["has_more"] is False


async def test_has_more_edges_at_exactly_50_and_51(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob", *FILLERS])
    acks = await fill(cluster, room, 50)
    bob = await cluster.connect("bob")
    _, hist = await bob.subscribe(room)
    assert ids(hist["messages"]) == ids(acks) and hist["has_more"] is False
    page = await bob.request("history", "history", room=room, limit=50)
    assert ids(page["messages"]) == ids(acks) and page["has_more"] is False
    page = await bob.request("history", "history", room=room, limit=49)
    assert ids(page["messages"]) == ids(acks[1:]) and page["has_more"] is True
    page = await bob.request("history", "history", room=room, before=acks[-1]["seq"], limit=49)
    assert ids(page["messages"]) == ids(acks[:-1]) and page["has_more"] is False
    one_more = await bob.send_message(room, "the 51st")
    _, hist = await bob.subscribe(room)
    assert ids(hist["messages"]) == [*ids(acks[1:]), one_more["id"]]
    assert hist["has_more"] is True


async def test_subscribing_twice_still_delivers_each_message_once(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    first = await alice.send_message(room, "one")
    await bob.subscribe(room)
    _, again = await bob.subscribe(room)
    assert ids(again["messages"]) == [first["id"]]
    live = [await alice.send_message(room, f"live {i}") for i in range(3)]
    for ack in live:
        await bob.expect("message", room=room, id=ack["id"])
    await bob.drain(0.6)
    assert [f["id"] for f in bob.frames if f.get("type") == "message"] == ids(live)


async def test_subscribe_since_returns_exactly_the_messages_after_since(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    acks = [await alice.send_message(room, f"msg {i}") for i in range(8)]
    bob = await cluster.connect("bob")
    sub, hist = await bob.subscribe(room, since=acks[4]["seq"])
    assert sub["head"] == acks[-1]["seq"]
    assert ids(hist["messages"]) == ids(acks[5:])
    assert hist["has_more"] is False
    # since = -1: everything; since = head: nothing
    await bob.send(type="unsubscribe", room=room, ref="u1")
    await bob.expect("unsubscribed", ref="u1")
    _, everything = await bob.subscribe(room, since=-1)
    assert ids(everything["messages"]) == ids(acks)
    await bob.send(type="unsubscribe", room=room, ref="u2")
    await bob.expect("unsubscribed", ref="u2")
    _, nothing = await bob.subscribe(room, since=acks[-1]["seq"])
    assert nothing["messages"] == [] and nothing["has_more"] is False


async def test_subscribe_since_then_live_messages_without_gap_or_duplicate(
    cluster: Cluster,
) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    first = [await alice.send_message(room, f"a{i}") for i in range(3)]
    bob = await cluster.connect("bob")
    await bob.subscribe(room, since=first[0]["seq"])
    later = [await alice.send_message(room, f"b{i}") for i in range(3)]
    for ack in later:
        await bob.expect("message", room=room, id=ack["id"])
    await bob.drain(0.5)
    assert ids(bob.messages(room)) == ids(first[1:] + later)


async def test_live_messages_follow_history_never_precede_it(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    # alice keeps sending while bob subscribes
    cids = [uuid.uuid4().hex for _ in range(20)]
    for i, cid in enumerate(cids[:10]):
        await alice.send(type="send", room=room, client_id=cid, body=f"x{i}", ref=f"s{i}")
    bob = await cluster.connect("bob")
    await bob.send(type="subscribe", room=room, ref="sub")
    for i, cid in enumerate(cids[10:], start=10):
        await alice.send(type="send", room=room, client_id=cid, body=f"x{i}", ref=f"s{i}")
    acks = [await alice.expect("ack", ref=f"s{i}") for i in range(20)]
    await bob.expect("history", ref="sub")
    for ack in acks:
        if not any(m["id"] == ack["id"] for m in bob.messages(room)):
            await bob.expect("message", room=room, id=ack["id"])
    await bob.drain(0.5)
    kinds = [f["type"] for f in bob.frames if f.get("room") == room]
    assert kinds[0] == "subscribed" and kinds[1] == "history"
    assert all(k == "message" for k in kinds[2:])
    got = bob.messages(room)
    assert sorted(ids(got)) == sorted(ids(acks))
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


BACKENDS = pytest.mark.parametrize("backend", ["embedded", "kafka"])


@BACKENDS
async def test_subscribe_since_over_replay_cap_gives_newest_cap_with_has_more(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """With more than the replay cap after `since`: the newest cap, has_more, page back."""
    async with own_cluster(backend, tmp_path, services, PARLEY_REPLAY_CAP="5") as cluster:
        room = await group(cluster, "alice", ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"c{i}") for i in range(12)]
        bob = await cluster.connect("bob")
        since = acks[1]["seq"]
        _, hist = await bob.subscribe(room, since=since)
        assert ids(hist["messages"]) == ids(acks[-5:])
        assert hist["has_more"] is True
        # page back until since
        page = await bob.request(
            "history", "history", room=room, before=hist["messages"][0]["seq"], limit=100
        )
        assert ids(page["messages"]) == ids(acks[:-5])
        assert page["has_more"] is False
        # exactly the cap after since: all of them, no more
        _, exact = await bob.subscribe(room, since=acks[-6]["seq"])
        assert ids(exact["messages"]) == ids(acks[-5:])
        assert exact["has_more"] is False


@BACKENDS
async def test_paging_across_a_small_room_window(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """History pages and resumes that span the in-memory window and the database."""
    async with own_cluster(backend, tmp_path, services, PARLEY_ROOM_WINDOW="10") as cluster:
        room = await group(cluster, "alice", ["bob", *FILLERS])
        acks = await fill(cluster, room, 60)
        bob = await cluster.connect("bob")

        async def persisted() -> bool:
            got = await bob.request("history", "history", room=room, limit=100)
            return ids(got["messages"]) == ids(acks)

        deadline = time.monotonic() + 10
        while not await persisted():
            assert time.monotonic() < deadline, "history never had all 60 messages"
            await asyncio.sleep(0.2)
        for limit in (7, 10, 11, 50):
            assert ids(await bob.page_back(room, limit)) == ids(acks), limit
        for k in (0, 20, 45, 49, 50, 55):
            _, hist = await bob.subscribe(room, since=acks[k]["seq"])
            assert ids(hist["messages"]) == ids(acks[k + 1 :]), k
        _, recent = await bob.subscribe(room)
        assert ids(recent["messages"]) == ids(acks[-50:]) and recent["has_more"] is True


@BACKENDS
async def test_since_misses_nothing_while_persistence_lags(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """PROTOCOL: with `since`, nothing after since is missing even while persistence lags.

    No persistence worker runs here (PARLEY_WORKERS empty, as when `parley worker`
    processes are down), and the in-memory room window is small.
    """
    async with own_cluster(
        backend, tmp_path, services, PARLEY_ROOM_WINDOW="10", PARLEY_WORKERS=""
    ) as cluster:
        room = await group(cluster, "alice", ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"lag {i}") for i in range(30)]
        bob = await cluster.connect("bob")
        _, hist = await bob.subscribe(room, since=acks[4]["seq"])
        assert ids(hist["messages"]) == ids(acks[5:])
        assert hist["has_more"] is False


# unsubscribe -------------------------------------------------------------------


async def test_unsubscribe_stops_messages_of_that_room(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    other = await group(cluster, "alice", ["bob"], "other")
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    await bob.subscribe(other)
    ack = await alice.send_message(room, "before")
    await bob.expect("message", room=room, id=ack["id"])
    reply = await bob.request("unsubscribe", "unsubscribed", room=room)
    assert reply["room"] == room
    n = len(bob.frames)
    await alice.send_message(room, "after 1")
    await alice.send_message(room, "after 2")
    await alice.send(type="typing", room=room)
    still = await alice.send_message(other, "the other room still flows")
    await bob.expect("message", room=other, id=still["id"])
    await bob.drain(0.7)
    assert [f for f in bob.frames[n:] if f.get("room") == room] == []
    # bob may still send to the room he left: sending needs membership only
    mine = await bob.send_message(room, "sent while unsubscribed")
    assert mine["room"] == room
    got = await alice.request("history", "history", room=room)
    assert got["messages"][-1]["body"] == "sent while unsubscribed"


async def test_subscribe_again_after_unsubscribe(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    await bob.request("unsubscribe", "unsubscribed", room=room)
    missed = await alice.send_message(room, "missed")
    sub, hist = await bob.subscribe(room)
    assert sub["head"] == missed["seq"]
    assert ids(hist["messages"]) == [missed["id"]]
    live = await alice.send_message(room, "live")
    got = await bob.expect("message", room=room, id=live["id"])
    assert got["body"] == "live"
    await bob.drain(0.5)
    assert [f["id"] for f in bob.frames if f.get("type") == "message"] == [live["id"]]


# send --------------------------------------------------------------------------


async def test_send_ack_fields_and_message_fields(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    ack = await alice.send_message(room, "\n\t  hello, world  \n", client_id="cid-1")
    assert ack["type"] == "ack"
    assert ack["room"] == room and ack["client_id"] == "cid-1"
    assert isinstance(ack["id"], str) and 1 <= len(ack["id"]) <= 64
    assert isinstance(ack["seq"], int) and not isinstance(ack["seq"], bool) and ack["seq"] >= 0
    assert_rfc3339_utc(ack["ts"])
    msg = await bob.expect("message", room=room)
    assert msg["body"] == "hello, world"
    assert msg["sender"] == "alice" and msg["client_id"] == "cid-1"
    assert (msg["id"], msg["seq"], msg["ts"]) == (ack["id"], ack["seq"], ack["ts"])
    assert_rfc3339_utc(msg["ts"])
    hist = await bob.request("history", "history", room=room)
    assert hist["messages"][-1]["body"] == "hello, world"
    # inner whitespace is kept, only the ends are trimmed
    ack2 = await alice.send_message(room, "  a  b  ")
    msg2 = await bob.expect("message", room=room, id=ack2["id"])
    assert msg2["body"] == "a  b"
    assert ack2["seq"] > ack["seq"] and ack2["id"] != ack["id"]


async def test_message_ids_are_unique(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    other = await group(cluster, "alice", ["bob"], "other")
    alice = await cluster.connect("alice")
    acks = [await alice.send_message(r, "x") for r in (room, other, room, other)]
    assert len({a["id"] for a in acks}) == 4


async def test_pipelined_sends_get_increasing_seqs_in_send_order(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    refs = [f"pipe{i}" for i in range(25)]
    for i, ref in enumerate(refs):
        await alice.send(type="send", room=room, client_id=f"pc{i}", body=f"p{i}", ref=ref)
    acks = [await alice.expect("ack", ref=ref) for ref in refs]
    seqs = [a["seq"] for a in acks]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    assert [a["client_id"] for a in acks] == [f"pc{i}" for i in range(25)]
    for ack in acks:
        await bob.expect("message", room=room, id=ack["id"])
    assert [m["body"] for m in bob.messages(room)] == [f"p{i}" for i in range(25)]


async def test_repeated_client_id_gives_the_same_ack_and_one_message(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    await alice.subscribe(room)
    first = await alice.send_message(room, "only once", client_id="dup-1")
    second = await alice.send_message(room, "only once", client_id="dup-1")
    # a retry with another body is still the same message
    third = await alice.send_message(room, "changed body", client_id="dup-1")
    keys = ("room", "client_id", "id", "seq", "ts")
    assert {k: second[k] for k in keys} == {k: first[k] for k in keys}
    assert {k: third[k] for k in keys} == {k: first[k] for k in keys}
    after = await alice.send_message(room, "next", client_id="dup-2")
    assert after["seq"] > first["seq"]
    await bob.expect("message", room=room, id=after["id"])
    await bob.drain(0.5)
    await alice.expect("message", room=room, id=after["id"])
    await alice.drain(0.3)
    for client in (alice, bob):
        got = [m for m in client.messages(room) if m["client_id"] == "dup-1"]
        assert len(got) == 1, got
        assert got[0]["body"] == "only once"
    hist = await bob.request("history", "history", room=room)
    assert [m["client_id"] for m in hist["messages"]] == ["dup-1", "dup-2"]


async def test_pipelined_duplicate_client_id_is_one_message(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await bob.subscribe(room)
    for i in range(5):
        await alice.send(type="send", room=room, client_id="same", body="hey", ref=f"d{i}")
    acks = [await alice.expect("ack", ref=f"d{i}") for i in range(5)]
    assert len({(a["id"], a["seq"], a["ts"]) for a in acks}) == 1
    await bob.expect("message", room=room, id=acks[0]["id"])
    await bob.drain(0.7)
    assert len(bob.messages(room)) == 1


async def test_same_client_id_from_two_senders_is_two_messages(cluster: Cluster) -> None:
    """client_id is unique per sender only."""
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    a = await alice.send_message(room, "from alice", client_id="shared")
    b = await bob.send_message(room, "from bob", client_id="shared")
    assert a["id"] != b["id"] and a["seq"] != b["seq"]


async def test_each_message_arrives_once_on_every_session_of_the_sender(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    phone = await cluster.connect("alice", device="phone")
    laptop = await cluster.connect("alice", device="laptop")
    await phone.subscribe(room)
    await laptop.subscribe(room)
    acks = [await phone.send_message(room, f"n{i}") for i in range(3)]
    for client in (phone, laptop):
        for ack in acks:
            await client.expect("message", room=room, id=ack["id"])
        await client.drain(0.4)
        assert ids(client.messages(room)) == ids(acks)


# history ---------------------------------------------------------------------


async def test_history_paging_walks_back_through_120_messages_once_each(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob", *FILLERS])
    acks = await fill(cluster, room, 120)
    bob = await cluster.connect("bob")
    newest = await bob.request("history", "history", room=room, limit=50)
    assert newest["room"] == room
    assert ids(newest["messages"]) == ids(acks[-50:]) and newest["has_more"] is True
    seen: list[dict[str, Any]] = list(newest["messages"])
    pages = [newest]
    before = newest["messages"][0]["seq"]
    while pages[-1]["has_more"]:
        page = await bob.request("history", "history", room=room, before=before, limit=50)
        assert page["messages"], "has_more said there was more"
        seqs = [m["seq"] for m in page["messages"]]
        assert seqs == sorted(seqs) and all(s < before for s in seqs)
        seen = page["messages"] + seen
        pages.append(page)
        before = seqs[0]
        assert len(pages) < 10
    assert [len(p["messages"]) for p in pages] == [50, 50, 20]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert ids(seen) == ids(acks)
    assert len(set(ids(seen))) == 120
    assert sorted(m["body"] for m in seen) == sorted(f"m{i}" for i in range(120))


async def test_history_default_limit_and_bounds(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob", *FILLERS])
    acks = await fill(cluster, room, 60)
    bob = await cluster.connect("bob")
    default = await bob.request("history", "history", room=room)
    assert ids(default["messages"]) == ids(acks[-50:]) and default["has_more"] is True
    one = await bob.request("history", "history", room=room, limit=1)
    assert ids(one["messages"]) == [acks[-1]["id"]] and one["has_more"] is True
    hundred = await bob.request("history", "history", room=room, limit=100)
    assert ids(hundred["messages"]) == ids(acks) and hundred["has_more"] is False
    # before is exclusive
    mid = acks[30]["seq"]
    page = await bob.request("history", "history", room=room, before=mid, limit=5)
    assert ids(page["messages"]) == ids(acks[25:30]) and page["has_more"] is True
    # exactly the oldest ones: no more
    oldest = await bob.request("history", "history", room=room, before=acks[3]["seq"], limit=3)
    assert ids(oldest["messages"]) == ids(acks[:3]) and oldest["has_more"] is False
    # before the first message: empty
    empty = await bob.request("history", "history", room=room, before=acks[0]["seq"])
    assert empty["messages"] == [] and empty["has_more"] is False
    # before past the head: the newest
    past = await bob.request(
        "history", "history", room=room, before=acks[-1]["seq"] + 1000, limit=2
    )
    assert ids(past["messages"]) == ids(acks[-2:])


async def test_history_of_empty_room(cluster: Cluster) -> None:
    room = await group(cluster, "alice", [])
    alice = await cluster.connect("alice")
    hist = await alice.request("history", "history", room=room, limit=10)
    assert hist == {
        "type": "history",
        "room": room,
        "messages": [],
        "has_more": False,
        "ref": hist["ref"],
    }


# typing and read ---------------------------------------------------------------


async def test_typing_goes_to_other_subscribed_members_only(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob", "carol", "dave"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    carol = await cluster.connect("carol")
    dave = await cluster.connect("dave")  # a member, but not subscribed
    for c in (alice, bob, carol):
        await c.subscribe(room)
    await alice.send(type="typing", room=room, ref="t1")
    for c in (bob, carol):
        got = await c.expect("typing", room=room)
        assert got["user"] == "alice"
        assert set(got) <= {"type", "room", "user"}
    await alice.drain(0.7)
    await dave.drain(0.1)
    assert [f for f in alice.frames if f.get("type") == "typing"] == []
    assert [f for f in dave.frames if f.get("type") == "typing"] == []
    # typing has no reply: no ack, no error
    assert [f for f in alice.frames if f.get("ref") == "t1"] == []


async def test_read_sends_receipts_to_others_and_sets_last_read(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await alice.subscribe(room)
    await bob.subscribe(room)
    acks = [await alice.send_message(room, f"r{i}") for i in range(4)]
    await bob.send(type="read", room=room, seq=acks[1]["seq"], ref="rd")
    receipt = await alice.expect("receipt", room=room)
    assert receipt["user"] == "bob" and receipt["seq"] == acks[1]["seq"]
    await bob.drain(0.5)
    assert [f for f in bob.frames if f.get("type") == "receipt"] == []
    assert [f for f in bob.frames if f.get("ref") == "rd"] == []
    deadline = time.monotonic() + 5
    while True:
        status, rooms = await cluster.api("bob").call("GET", "/api/rooms")
        assert status == 200
        mine = next(r for r in rooms if r["id"] == room)
        if mine["last_read"] == acks[1]["seq"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert mine["last_read"] == acks[1]["seq"]
    assert mine["unread"] == 2
    assert mine["head"] == acks[-1]["seq"]


# ping, ref ----------------------------------------------------------------------


async def test_ping_pong(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    pong = await alice.request("ping", "pong")
    assert pong["type"] == "pong"
    await alice.send(type="ping")
    bare = await alice.expect("pong")
    assert "ref" not in bare or bare["ref"] is None


async def test_ref_is_echoed_on_every_direct_reply(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    await alice.send(type="subscribe", room=room, ref="R-sub")
    assert (await alice.expect("subscribed", ref="R-sub"))["room"] == room
    assert (await alice.expect("history", ref="R-sub"))["room"] == room
    await alice.send(type="send", room=room, client_id="c", body="b", ref="R-send")
    assert (await alice.expect("ack", ref="R-send"))["client_id"] == "c"
    await alice.send(type="history", room=room, ref="R-hist")
    assert (await alice.expect("history", ref="R-hist"))["room"] == room
    await alice.send(type="ping", ref="R-ping")
    await alice.expect("pong", ref="R-ping")
    await alice.send(type="unsubscribe", room=room, ref="R-unsub")
    assert (await alice.expect("unsubscribed", ref="R-unsub"))["room"] == room
    long_ref = "x" * 64
    await alice.send(type="ping", ref=long_ref)
    await alice.expect("pong", ref=long_ref)


# connecting with room / receiver / since ----------------------------------------


async def test_connect_with_room_subscribes(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    acks = [await alice.send_message(room, f"q{i}") for i in range(3)]
    bob = await cluster.connect("bob", room=room)
    assert bob.frames[0]["type"] == "hello"
    sub = await bob.expect("subscribed", room=room)
    assert sub["head"] == acks[-1]["seq"]
    hist = await bob.expect("history", room=room)
    assert ids(hist["messages"]) == ids(acks) and hist["has_more"] is False
    live = await alice.send_message(room, "live")
    await bob.expect("message", room=room, id=live["id"])


async def test_connect_with_room_and_since_resumes(cluster: Cluster) -> None:
    room = await group(cluster, "alice", ["bob"])
    alice = await cluster.connect("alice")
    acks = [await alice.send_message(room, f"q{i}") for i in range(6)]
    bob = await cluster.connect("bob", room=room, since=acks[2]["seq"])
    await bob.expect("subscribed", room=room)
    hist = await bob.expect("history", room=room)
    assert ids(hist["messages"]) == ids(acks[3:])
    assert hist["has_more"] is False


@pytest.mark.parametrize("param", ["receiver", "receiverId"])
async def test_connect_with_receiver_subscribes_to_the_dm_room(
    cluster: Cluster, param: str
) -> None:
    to_bob: dict[str, Any] = {param: "bob"}
    to_alice: dict[str, Any] = {param: "alice"}
    alice = await cluster.connect("alice", **to_bob)
    sub = await alice.expect("subscribed")
    assert sub["room"] == "dm:alice:bob" and sub["head"] == -1
    hist = await alice.expect("history", room="dm:alice:bob")
    assert hist["messages"] == []
    bob = await cluster.connect("bob", **to_alice)
    sub_b = await bob.expect("subscribed")
    assert sub_b["room"] == "dm:alice:bob"
    ack = await bob.send_message("dm:alice:bob", "hi alice")
    got = await alice.expect("message", room="dm:alice:bob", id=ack["id"])
    assert got["sender"] == "bob" and got["body"] == "hi alice"
    # resume on connect in the DM room
    again = await cluster.connect("alice", **to_bob, since=-1)
    hist2 = await again.expect("history", room="dm:alice:bob")
    assert ids(hist2["messages"]) == [ack["id"]]


async def test_dm_room_name_is_byte_ordered(cluster: Cluster) -> None:
    # "Zed" < "alice" in byte order ('Z' is 0x5a, 'a' is 0x61)
    alice = await cluster.connect("alice", receiver="Zed")
    sub = await alice.expect("subscribed")
    assert sub["room"] == "dm:Zed:alice"
    zed = await cluster.connect("Zed", receiver="alice")
    assert (await zed.expect("subscribed"))["room"] == "dm:Zed:alice"
    ack = await alice.send_message("dm:Zed:alice", "hello Zed")
    await zed.expect("message", room="dm:Zed:alice", id=ack["id"])
    # "a.b" < "a_b" ('.' is 0x2e, '_' is 0x5f)
    ab = await cluster.connect("a_b", receiver="a.b")
    assert (await ab.expect("subscribed"))["room"] == "dm:a.b:a_b"


async def test_dm_room_by_subscribe_frame(cluster: Cluster) -> None:
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    sub, _ = await bob.subscribe("dm:alice:bob")
    assert sub["room"] == "dm:alice:bob"
    ack = await alice.send_message("dm:alice:bob", "direct")
    got = await bob.expect("message", room="dm:alice:bob", id=ack["id"])
    assert got["body"] == "direct"


# delivery only for subscribed rooms ---------------------------------------------


async def test_no_frame_of_an_unsubscribed_room_even_while_it_is_busy(cluster: Cluster) -> None:
    room_a = await group(cluster, "alice", ["bob"], "a")
    room_b = await group(cluster, "alice", ["bob"], "b")
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    await alice.subscribe(room_a)
    await bob.subscribe(room_b)
    refs = []
    for i in range(30):
        ref = f"busy{i}"
        await bob.send(type="send", room=room_b, client_id=f"b{i}", body=f"busy {i}", ref=ref)
        refs.append(ref)
        if i % 10 == 0:
            await bob.send(type="typing", room=room_b)
    for ref in refs:
        await bob.expect("ack", ref=ref)
    await bob.send(type="read", room=room_b, seq=0)
    ack_a = await bob.send_message(room_a, "for room a")
    got = await alice.expect("message", room=room_a, id=ack_a["id"])
    assert got["body"] == "for room a"
    await alice.drain(0.7)
    assert frames_of_room(alice, room_b) == []
    assert {f.get("room") for f in alice.frames if "room" in f} == {room_a}
    # and bob did get room b's traffic, so the room was really busy
    assert len([f for f in bob.frames if f.get("type") == "message" and f["room"] == room_b]) == 30


async def test_hello_lists_the_users_rooms(cluster: Cluster) -> None:
    r1 = await group(cluster, "alice", ["bob"], "one")
    r2 = await group(cluster, "carol", ["bob"], "two")
    await group(cluster, "carol", ["dave"], "three")
    bob = await cluster.connect("bob")
    hello = bob.frames[0]
    assert hello["type"] == "hello" and hello["user"] == "bob"
    assert {r1, r2} <= set(hello["rooms"])
    assert all(r in (r1, r2) or r.startswith("dm:") for r in hello["rooms"])
    assert isinstance(hello["session"], str) and hello["session"]
    other = await cluster.connect("bob")
    assert other.frames[0]["session"] != hello["session"]


@BACKENDS
async def test_history_misses_nothing_while_persistence_lags(
    backend: str, tmp_path: Path, services: dict[str, str]
) -> None:
    """`history` is "the limit newest messages with seq < before", persisted yet or not."""
    async with own_cluster(
        backend, tmp_path, services, PARLEY_ROOM_WINDOW="10", PARLEY_WORKERS=""
    ) as cluster:
        room = await group(cluster, "alice", ["bob"])
        alice = await cluster.connect("alice")
        acks = [await alice.send_message(room, f"lag {i}") for i in range(30)]
        bob = await cluster.connect("bob")
        _, recent = await bob.subscribe(room)
        assert ids(recent["messages"]) == ids(acks) and recent["has_more"] is False
        page = await bob.request("history", "history", room=room, before=acks[20]["seq"], limit=5)
        assert ids(page["messages"]) == ids(acks[15:20]) and page["has_more"] is True
