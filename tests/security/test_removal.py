"""A member removed from a room while connected stops receiving, and sending, at once.

tests/e2e/test_cluster.py and test_rest.py check that a removed member gets
`unsubscribed` within a second and nothing after it. The race they wait out
is the point here: from the moment `DELETE /api/rooms/{id}/members/{user}`
has answered 204, nothing sent to the room may reach any session of the
removed user, on either node. Sends by the removed user are refused at once
by the node that made the change; another node refuses them once it has read
the removal from the log, which the DELETE waits to be in (milliseconds; the
bound tested is one second, docs/reliability.md). Each test repeats the race
in fresh rooms, because one lucky ordering proves nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.harness import Cluster, WsClient

TRIALS = 6
BURST = 5


def room_id() -> str:
    return f"rm-{uuid.uuid4().hex[:10]}"


async def warm(client: WsClient, room: str) -> str:
    """Subscribed, and known as a member by its node (a send went through); the message id."""
    await client.subscribe(room)
    ack = await client.send_message(room, "warm")
    return str(ack["id"])


async def test_a_removed_member_cannot_send_once_the_delete_answered(two_nodes: Cluster) -> None:
    accepted: list[tuple[int, str, dict[str, Any]]] = []
    alice_api = two_nodes.api("alice", node=0)
    for trial in range(TRIALS):
        room = room_id()
        await alice_api.create_room(room, ["bob"])
        bob = await two_nodes.connect("bob", node=0)
        elsewhere = await two_nodes.connect("bob", node=1)
        await warm(bob, room)
        await warm(elsewhere, room)
        status, _ = await alice_api.call("DELETE", f"/api/rooms/{room}/members/bob")
        assert status == 204
        # right after the 204, on the node that made the change: socket and REST
        ref = f"late-{trial}"
        await bob.send(type="send", room=room, client_id=ref, body="am I still in?", ref=ref)
        reply = await bob.reply(ref)
        if reply["type"] != "error" or reply["code"] != "not_member":
            accepted.append((trial, "ws", reply))
        status, body = await two_nodes.api("bob", node=0).call(
            "POST",
            f"/api/rooms/{room}/messages",
            {"client_id": f"rest-{trial}", "body": "and now?"},
        )
        if status != 404:
            accepted.append((trial, "rest", body))
        # on the other node, once it has read the removal (within a second)
        await asyncio.sleep(1.0)
        ref = f"later-{trial}"
        await elsewhere.send(type="send", room=room, client_id=ref, body="here?", ref=ref)
        reply = await elsewhere.reply(ref)
        if reply["type"] != "error" or reply["code"] != "not_member":
            accepted.append((trial, "ws-other-node", reply))
        await bob.close()
        await elsewhere.close()
    assert accepted == [], f"{len(accepted)} sends accepted after the removal: {accepted}"


async def test_a_removed_member_gets_nothing_sent_after_the_delete_answered(
    two_nodes: Cluster,
) -> None:
    leaks: list[tuple[int, str, dict[str, Any]]] = []
    alice_api = two_nodes.api("alice", node=0)
    alice = await two_nodes.connect("alice", node=0)
    carol = await two_nodes.connect("carol", node=1)
    for trial in range(TRIALS):
        room = room_id()
        await alice_api.create_room(room, ["bob", "carol"])
        # bob on both nodes, subscribed; alice and carol send from both nodes
        bobs = [await two_nodes.connect("bob", node=n) for n in (0, 1)]
        warmed = [await warm(c, room) for c in (*bobs, carol)]
        for b in bobs:
            while not set(warmed) <= {m["id"] for m in b.messages(room)}:
                await b.expect("message", room=room, timeout=15)
        marks = [len(b.frames) for b in bobs]
        status, _ = await alice_api.call("DELETE", f"/api/rooms/{room}/members/bob")
        assert status == 204
        after: set[str] = set()
        senders = {"alice": alice, "carol": carol}
        for i in range(BURST):
            for name, sender in senders.items():
                ref = f"t{trial}-{name}-{i}"
                await sender.send(
                    type="send", room=room, client_id=ref, body="bob is gone", ref=ref
                )
        await alice.send(type="typing", room=room)
        for i in range(BURST):
            for name, sender in senders.items():
                ack = await sender.reply(f"t{trial}-{name}-{i}")
                assert ack["type"] == "ack", ack
                after.add(ack["id"])
        # every message is at carol (the room goes on) before bob's frames are judged
        for mid in after:
            await carol.expect("message", room=room, id=mid, timeout=15)
        for n, (b, mark) in enumerate(zip(bobs, marks, strict=True)):
            await b.drain(0.3)
            for f in b.frames[mark:]:
                if f.get("room") != room:
                    continue
                if f.get("type") in ("typing", "receipt") or f.get("id") in after:
                    leaks.append((trial, f"bob@node{n}", f))
        for b in bobs:
            await b.close()
    assert leaks == [], (
        f"{len(leaks)} frames of the room reached bob after the removal: {leaks[:5]}"
    )
