"""The client's calls against a real node: typed events, history, errors, state."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from parley.client import (
    Ack,
    BadRequest,
    Client,
    ClientClosed,
    Connected,
    ConnectionState,
    Message,
    NotMember,
    Presence,
    PresenceStatus,
    Receipt,
    ServerErrorEvent,
    StateChanged,
    Subscribed,
    TooLarge,
    Typing,
    Unsubscribed,
)
from tests.client.support import connected
from tests.harness import Cluster, token


async def test_messages_typing_receipts_and_presence_are_typed(node: Cluster) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("general", ["bob"])
    async with (
        connected(url, "bob") as (bob, bob_events),
        connected(url, "alice") as (
            alice,
            alice_events,
        ),
    ):
        assert bob.user == "bob" and bob.rooms == ("general",)
        hello = bob_events.of(Connected)[0]
        assert hello.user == "bob" and hello.server == "client" and not hello.reconnect
        assert bob_events.of(StateChanged)[-1].state is ConnectionState.CONNECTED
        sub = await bob.subscribe("general")
        assert sub.head == -1 and sub.oldest is None and not sub.has_more
        await alice.subscribe("general")
        await bob_events.wait_for(
            lambda: Presence("alice", PresenceStatus.ONLINE) in bob_events.of(Presence)
        )

        ack = await alice.send("general", "  hello bob  ", client_id="c-1")
        assert isinstance(ack, Ack)
        assert (ack.room, ack.client_id) == ("general", "c-1")
        (got,) = await bob_events.wait_messages("general", 1)
        assert got == Message(
            room="general",
            id=ack.id,
            seq=ack.seq,
            sender="alice",
            body="hello bob",
            ts=ack.ts,
            client_id="c-1",
        )
        assert got.ts.tzinfo is not None
        assert abs(got.ts - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
        # The sender's own session gets its message too, once.
        assert [m.id for m in await alice_events.wait_messages("general", 1)] == [ack.id]

        assert alice.typing("general")
        await bob_events.wait_for(lambda: Typing("general", "alice") in bob_events.of(Typing))
        bob.read("general", ack.seq)
        await alice_events.wait_for(
            lambda: Receipt("general", "bob", ack.seq) in alice_events.of(Receipt)
        )
        rooms = await alice.rest.rooms()
        assert [(r.id, r.head, r.unread) for r in rooms] == [("general", ack.seq, 0)]

    await bob_events.wait_for(lambda: bob.state is ConnectionState.CLOSED)
    assert bob_events.of(StateChanged)[-1].state is ConnectionState.CLOSED


async def test_subscribe_delivers_recent_history_then_live_and_history_pages_back(
    node: Cluster,
) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("big", ["bob"])
    async with connected(url, "alice") as (alice, _):
        acks = await asyncio.gather(*(alice.send("big", f"m{i}") for i in range(120)))
        assert [a.seq for a in acks] == sorted(a.seq for a in acks), "pipelined sends keep order"
        async with connected(url, "bob") as (bob, events):
            sub = await bob.subscribe("big")
            recent = await events.wait_messages("big", 50)
            assert [m.body for m in recent] == [f"m{i}" for i in range(70, 120)]
            assert sub.has_more and sub.oldest == recent[0].seq and sub.head == acks[-1].seq
            assert events.of(Subscribed) == [Subscribed("big", acks[-1].seq, resumed=False)]
            # Subscribing again is the same subscription and delivers nothing twice.
            assert await bob.subscribe("big") == sub
            older = await bob.history("big", before=sub.oldest, limit=100)
            assert [m.body for m in older.messages] == [f"m{i}" for i in range(70)]
            assert not older.has_more
            await alice.send("big", "live")
            live = await events.wait_messages("big", 51)
            assert live[-1].body == "live" and len({m.seq for m in live}) == 51


async def test_errors_are_typed(node: Cluster) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("mine", [])
    async with connected(url, "mallory") as (mallory, events):
        with pytest.raises(NotMember):
            await mallory.subscribe("mine")
        assert mallory.subscriptions == ()
        with pytest.raises(NotMember):
            await mallory.send("mine", "let me in")
        with pytest.raises(NotMember):
            await mallory.history("mine")
        with pytest.raises(TooLarge):
            await mallory.send("mine", "x" * 4097)
        with pytest.raises(BadRequest):
            await mallory.send("mine", "   ")
        with pytest.raises(NotMember):
            await mallory.rest.room("mine")
        # A frame with no reply gets its error as an event.
        assert mallory.typing("mine")
        await events.wait_for(lambda: bool(events.of(ServerErrorEvent)))
        assert events.of(ServerErrorEvent)[0].code == "not_member"
        assert mallory.unacked == 0
    with pytest.raises(ClientClosed):
        await mallory.send("mine", "after close")


async def test_removed_member_gets_unsubscribed_event(node: Cluster) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("club", ["bob"])
    async with connected(url, "bob") as (bob, events):
        await bob.subscribe("club")
        status, _ = await node.api("alice").call("DELETE", "/api/rooms/club/members/bob")
        assert status == 204
        await events.wait_for(lambda: Unsubscribed("club") in events.of(Unsubscribed))
        assert bob.subscriptions == ()


async def test_callbacks_get_events_in_order(node: Cluster) -> None:
    url = node.nodes[0].url
    await node.api("alice").create_room("cb", [])
    seen: list[str] = []
    done = asyncio.Event()

    async def on_message(message: Message) -> None:
        seen.append(message.body)
        if len(seen) == 3:
            done.set()

    client = Client(url, token("alice"), buffer_events=False)
    client.on(Message, on_message)
    states: list[ConnectionState] = []
    client.on(StateChanged, lambda e: states.append(e.state))
    async with client:
        await client.subscribe("cb")
        for body in ("one", "two", "three"):
            await client.send("cb", body)
        await asyncio.wait_for(done.wait(), 10)
    assert seen == ["one", "two", "three"]
    assert states == [ConnectionState.CONNECTING, ConnectionState.CONNECTED, ConnectionState.CLOSED]


async def test_unsubscribed_rooms_are_not_resumed(node: Cluster) -> None:
    server = node.nodes[0]
    await node.api("alice").create_room("left", [])
    await node.api("alice").create_room("kept", [])
    async with connected(server.url, "alice") as (alice, events):
        await alice.subscribe("left")
        await alice.subscribe("kept")
        await alice.unsubscribe("left")
        assert alice.subscriptions == ("kept",) and alice.last_seq("left") is None
        await server.restart()
        await events.wait_for(lambda: any(s.resumed for s in events.of(Subscribed)))
        assert [(s.room, s.resumed) for s in events.of(Subscribed)] == [
            ("left", False),
            ("kept", False),
            ("kept", True),
        ]
