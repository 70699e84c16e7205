"""Two gateway nodes on one Kafka: the guarantees the seed design broke."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.harness import Cluster, WsClient


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["seq"]) for f in frames]


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_cross_node_delivery_to_every_session_once(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("lobby", ["bob"])
    alice0 = await two_nodes.connect("alice", node=0)
    alice1 = await two_nodes.connect("alice", node=1)  # the sender's other session
    bob1 = await two_nodes.connect("bob", node=1)
    for c in (alice0, alice1, bob1):
        await c.subscribe("lobby")
    acks = [await alice0.send_message("lobby", f"m{i}") for i in range(20)]
    for c in (alice0, alice1, bob1):
        await c.expect("message", room="lobby", seq=acks[-1]["seq"])
        await c.drain(0.3)
        got = c.messages("lobby")
        assert seqs(got) == seqs(acks), "each message once, in seq order"
        assert [m["body"] for m in got] == [f"m{i}" for i in range(20)]


async def test_room_isolation_under_concurrent_traffic(two_nodes: Cluster) -> None:
    rooms = [f"iso{i}" for i in range(8)]
    for i, room in enumerate(rooms):
        await two_nodes.api(f"owner{i}").create_room(room, [f"member{i}"])
    owners = [await two_nodes.connect(f"owner{i}", node=i % 2) for i in range(len(rooms))]
    members = [await two_nodes.connect(f"member{i}", node=(i + 1) % 2) for i in range(len(rooms))]
    for i, room in enumerate(rooms):
        await members[i].subscribe(room)

    async def blast(i: int) -> list[dict[str, Any]]:
        owner = owners[i]
        refs = []
        for n in range(30):
            ref = f"{i}-{n}"
            refs.append(ref)
            await owner.send(
                type="send", room=rooms[i], client_id=ref, body=f"{rooms[i]}:{n}", ref=ref
            )
        return [await owner.expect("ack", ref=r) for r in refs]

    all_acks = await asyncio.gather(*(blast(i) for i in range(len(rooms))))
    for i, room in enumerate(rooms):
        member = members[i]
        await member.expect("message", room=room, seq=all_acks[i][-1]["seq"])
        await member.drain(0.3)
        foreign = [f for f in member.frames if f.get("room") not in (None, room)]
        assert foreign == [], f"{room} got frames of other rooms"
        got = member.messages(room)
        assert seqs(got) == seqs(all_acks[i])
        assert all(m["body"].startswith(room + ":") for m in got)


async def test_retry_on_the_other_node_gets_the_same_ack(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("idem", ["bob"])
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe("idem")
    a0 = await two_nodes.connect("alice", node=0)
    first = await a0.send_message("idem", "once", client_id="retry-1")
    a1 = await two_nodes.connect("alice", node=1, device="phone")
    again = await a1.send_message("idem", "once", client_id="retry-1")
    assert (again["id"], again["seq"], again["ts"]) == (first["id"], first["seq"], first["ts"])
    await bob.drain(0.5)
    assert [m["client_id"] for m in bob.messages("idem")] == ["retry-1"]


async def test_simultaneous_retries_on_both_nodes_make_one_message(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("race", ["bob"])
    bob = await two_nodes.connect("bob", node=0)
    await bob.subscribe("race")
    a0 = await two_nodes.connect("alice", node=0)
    a1 = await two_nodes.connect("alice", node=1)
    for n in range(10):
        cid = f"dup-{n}"
        await asyncio.gather(
            a0.send(type="send", room="race", client_id=cid, body=f"b{n}", ref=cid),
            a1.send(type="send", room="race", client_id=cid, body=f"b{n}", ref=cid),
        )
    for n in range(10):
        cid = f"dup-{n}"
        x, y = await a0.expect("ack", ref=cid), await a1.expect("ack", ref=cid)
        assert (x["id"], x["seq"]) == (y["id"], y["seq"])
    await bob.drain(1.0)
    got = bob.messages("race")
    assert sorted(m["client_id"] for m in got) == sorted(f"dup-{n}" for n in range(10))
    assert seqs(got) == sorted(seqs(got))


async def test_idempotent_retry_after_restarting_every_node(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("durable", ["bob"])
    a = await two_nodes.connect("alice", node=0)
    first = await a.send_message("durable", "before restart", client_id="keep-1")
    await a.close()
    for node in two_nodes.nodes:
        await node.restart()
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe("durable")
    a = await two_nodes.connect("alice", node=1)
    again = await a.send_message("durable", "before restart", client_id="keep-1")
    assert (again["id"], again["seq"]) == (first["id"], first["seq"])
    new = await a.send_message("durable", "after restart", client_id="keep-2")
    assert new["seq"] > first["seq"]
    await bob.expect("message", seq=new["seq"])
    await bob.drain(0.3)
    assert [m["client_id"] for m in bob.messages("durable")] == ["keep-1", "keep-2"]


async def test_exactly_once_through_a_gateway_restart(two_nodes: Cluster) -> None:
    """A reader on node 1 resumes with `since` after node 1 restarts, mid-traffic."""
    await two_nodes.api("alice").create_room("steady", ["bob"])
    alice = await two_nodes.connect("alice", node=0)
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe("steady")
    acks: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def sender() -> None:
        n = 0
        while not stop.is_set() or n < 40:
            acks.append(await alice.send_message("steady", f"s{n}", client_id=f"s{n}"))
            n += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(sender())
    await wait_for(lambda: len(acks) >= 15)
    await bob.drain(0.1)
    before = bob.messages("steady")
    last = before[-1]["seq"] if before else -1
    await two_nodes.nodes[1].restart()
    bob2 = await two_nodes.connect("bob", node=1)
    await bob2.subscribe("steady", since=last)
    stop.set()
    await task
    last_seq = acks[-1]["seq"]
    while last_seq not in seqs(bob2.messages("steady")):  # from the history or live
        await bob2.expect("message", room="steady", timeout=20)
    await bob2.drain(0.5)
    combined = seqs(before) + seqs(bob2.messages("steady"))
    assert combined == seqs(acks), "no gap, no duplicate across the restart"


async def test_subscribe_racing_live_traffic_has_no_gap_or_duplicate(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("busy", [f"r{i}" for i in range(6)])
    alice = await two_nodes.connect("alice", node=0)
    acks: list[dict[str, Any]] = []

    async def sender() -> None:
        for n in range(150):
            acks.append(await alice.send_message("busy", f"x{n}"))

    task = asyncio.create_task(sender())
    readers: list[WsClient] = []
    for i in range(6):
        await asyncio.sleep(0.05)
        reader = await two_nodes.connect(f"r{i}", node=i % 2)
        await reader.subscribe("busy")
        readers.append(reader)
    await task
    all_seqs = seqs(acks)
    for reader in readers:
        while all_seqs[-1] not in seqs(reader.messages("busy")):
            await reader.expect("message", room="busy", timeout=20)
        await reader.drain(0.3)
        got = seqs(reader.messages("busy"))
        assert got, "history or live messages arrived"
        start = all_seqs.index(got[0])
        assert got == all_seqs[start:], "history then live: contiguous, each once"


async def test_one_connection_per_device_across_nodes(two_nodes: Cluster) -> None:
    old = await two_nodes.connect("alice", node=0, device="laptop")
    other_device = await two_nodes.connect("alice", node=0, device="phone")
    new = await two_nodes.connect("alice", node=1, device="laptop")
    assert await old.wait_closed(10) == 4409
    pong = await new.request("ping", "pong")
    assert pong["type"] == "pong"
    assert (await other_device.request("ping", "pong"))["type"] == "pong"


async def test_member_removed_on_one_node_stops_receiving_on_the_other(two_nodes: Cluster) -> None:
    api = two_nodes.api("alice", node=0)
    await api.create_room("club", ["bob"])
    alice = await two_nodes.connect("alice", node=0)
    bob = await two_nodes.connect("bob", node=1)
    await bob.subscribe("club")
    await alice.send_message("club", "welcome")
    await bob.expect("message", body="welcome")
    status, _ = await api.call("DELETE", "/api/rooms/club/members/bob")
    assert status == 204
    started = time.monotonic()
    await bob.expect("unsubscribed", room="club", timeout=2)
    assert time.monotonic() - started < 1.0
    await alice.send_message("club", "secret")
    await bob.drain(0.5)
    assert [m["body"] for m in bob.messages("club")] == ["welcome"]
    err = await bob.error("send", room="club", client_id=uuid.uuid4().hex, body="hi")
    assert err["code"] == "not_member"


async def test_typing_and_receipts_cross_nodes(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("chat", ["bob"])
    alice = await two_nodes.connect("alice", node=0)
    bob = await two_nodes.connect("bob", node=1)
    await alice.subscribe("chat")
    await bob.subscribe("chat")
    await alice.send(type="typing", room="chat")
    assert await bob.expect("typing", room="chat") == {
        "type": "typing",
        "room": "chat",
        "user": "alice",
    }
    ack = await alice.send_message("chat", "read me")
    await bob.send(type="read", room="chat", seq=ack["seq"])
    receipt = await alice.expect("receipt", room="chat")
    assert receipt == {"type": "receipt", "room": "chat", "user": "bob", "seq": ack["seq"]}
    await alice.drain(0.3)
    assert not [f for f in alice.frames if f.get("type") == "typing"], "no echo of one's own typing"


async def test_presence_across_nodes_and_when_a_node_dies(two_nodes: Cluster) -> None:
    await two_nodes.api("alice").create_room("friends", ["bob"])
    bob = await two_nodes.connect("bob", node=1)
    alice = await two_nodes.connect("alice", node=0)
    await bob.expect("presence", user="alice", status="online")
    await alice.close()
    await bob.expect("presence", user="alice", status="offline", timeout=5)
    await two_nodes.connect("alice", node=0)
    await bob.expect("presence", user="alice", status="online")
    started = time.monotonic()
    await two_nodes.nodes[0].kill()
    await bob.expect("presence", user="alice", status="offline", timeout=30)
    assert time.monotonic() - started < 30


async def test_history_pages_from_the_database_beyond_the_window(two_nodes: Cluster) -> None:
    """More messages than the node keeps in memory: history comes from the worker's rows."""
    for node in two_nodes.nodes:
        node.env["PARLEY_ROOM_WINDOW"] = "5"
        await node.restart()
    await two_nodes.api("alice").create_room("long", ["bob"])
    alice = await two_nodes.connect("alice", node=0)
    acks = [await alice.send_message("long", f"h{n}") for n in range(60)]
    bob = await two_nodes.connect("bob", node=1)
    deadline = time.monotonic() + 15
    while True:
        _status, page = await two_nodes.api("bob", node=1).call(
            "GET", "/api/rooms/long/messages?limit=100"
        )
        if len(page["messages"]) == 60 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert seqs(page["messages"]) == seqs(acks)
    assert seqs(await bob.page_back("long", 7)) == seqs(acks)
