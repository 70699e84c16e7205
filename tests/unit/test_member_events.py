"""Membership events read from the log: a removal that is no longer true (the
member was added back, and subscribed since) must not end the subscription;
one that is true ends it, and live messages stop from the moment it is read."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from parley.gateway.node import AckWaiter, Node, NotMember
from parley.log.base import LogRecord, partition_for
from parley.log.records import Event, encode_message, encode_removal
from parley.protocol.messages import Ack
from tests.unit.inprocess import Opened, until


async def send(node: Node, user: str, room: str, body: str) -> Ack:
    done: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()

    def failed(code: object, message: str) -> None:
        done.set_exception(AssertionError(f"send failed: {code} {message}"))

    node.send(user, room, uuid.uuid4().hex, body, AckWaiter(done.set_result, failed))
    return await asyncio.wait_for(done, 5)


async def subscribed(node: Node, user: str, room: str) -> Opened:
    opened = await Opened(node, user).open()
    await node.subscribe(opened.session, room, None, "s1")
    await asyncio.sleep(0)
    assert opened.frames("subscribed") != []
    return opened


async def bob_in_the_club(nodes: tuple[Node, Node]) -> tuple[Node, Node, Opened]:
    """alice's room "club" made on a; bob subscribed to it on b."""
    a, b = nodes
    await a.create_room("club", "Club", "alice", ["bob"])
    return a, b, await subscribed(b, "bob", "club")


def removal_sent(node: Node, room: str, user: str) -> None:
    """The `member removed` event a node sends after a removal it committed."""
    node._produce_event(Event("member", room=room, user=user, status="removed", node=node.node_id))


def bodies(opened: Opened) -> list[str]:
    return [str(f["body"]) for f in opened.frames("message")]


async def test_a_removal_read_after_a_re_add_keeps_the_new_subscription(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    await a.create_room("club", "Club", "alice", ["bob"])
    # On a, bob is removed and added back; b reads the removal only after bob,
    # on b, subscribed again (the store said he is a member).
    assert await a.store.remove_member("club", "bob")
    assert await a.store.add_member("club", "bob")
    bob = await subscribed(b, "bob", "club")
    removal_sent(a, "club", "bob")
    await send(a, "alice", "club", "after the re-add")
    await until(lambda: bodies(bob) == ["after the re-add"])
    await asyncio.sleep(0.2)
    assert bob.frames("unsubscribed") == []
    assert "club" in bob.session.subscriptions
    assert not bob.session.subscriptions["club"].held


async def test_a_removal_read_from_the_log_ends_the_subscription(
    nodes: tuple[Node, Node],
) -> None:
    a, _, bob = await bob_in_the_club(nodes)
    await send(a, "alice", "club", "welcome")
    await until(lambda: bodies(bob) == ["welcome"])
    assert await a.remove_member("club", "bob")
    await until(lambda: bob.frames("unsubscribed") != [])
    await send(a, "alice", "club", "secret")
    await asyncio.sleep(0.2)
    assert bodies(bob) == ["welcome"]
    assert "club" not in bob.session.subscriptions


async def test_nothing_is_delivered_while_the_store_is_asked(
    nodes: tuple[Node, Node],
) -> None:
    a, b, bob = await bob_in_the_club(nodes)
    asked = asyncio.Event()
    answer = asyncio.Event()
    is_member = b.membership.is_member

    async def slow(room: str, user: str) -> bool:
        asked.set()
        await answer.wait()
        return await is_member(room, user)

    b.membership.is_member = slow  # type: ignore[method-assign]
    assert await a.store.remove_member("club", "bob")
    removal_sent(a, "club", "bob")
    await asyncio.wait_for(asked.wait(), 5)
    await send(a, "alice", "club", "secret")
    await asyncio.sleep(0.2)
    assert bodies(bob) == [], "held from the moment the removal was read"
    answer.set()
    await until(lambda: bob.frames("unsubscribed") != [])
    await asyncio.sleep(0.1)
    assert bodies(bob) == []


async def test_removed_added_and_removed_again_while_the_store_is_asked_ends_it(
    nodes: tuple[Node, Node],
) -> None:
    a, b, bob = await bob_in_the_club(nodes)
    answered = asyncio.Event()
    go_on = asyncio.Event()
    is_member = b.membership.is_member
    calls = 0

    async def first_answer_late(room: str, user: str) -> bool:
        nonlocal calls
        calls += 1
        answer = await is_member(room, user)
        if calls == 1:
            answered.set()
            await go_on.wait()  # the store said "member" (re-added) and the reply is slow
        return answer

    b.membership.is_member = first_answer_late  # type: ignore[method-assign]
    assert await a.store.remove_member("club", "bob")
    assert await a.store.add_member("club", "bob")
    removal_sent(a, "club", "bob")
    await asyncio.wait_for(answered.wait(), 5)
    assert await a.store.remove_member("club", "bob")  # removed again: a second event
    removal_sent(a, "club", "bob")
    await asyncio.sleep(0.2)
    go_on.set()
    await until(lambda: bob.frames("unsubscribed") != [])
    await send(a, "alice", "club", "secret")
    await asyncio.sleep(0.2)
    assert bodies(bob) == []
    assert "club" not in bob.session.subscriptions


async def test_a_store_that_fails_oddly_leaves_the_removal_standing(
    nodes: tuple[Node, Node],
) -> None:
    a, b, bob = await bob_in_the_club(nodes)

    async def broken(room: str, user: str) -> bool:
        raise RuntimeError("a driver bug")

    b.membership.is_member = broken  # type: ignore[method-assign]
    assert await a.store.remove_member("club", "bob")
    removal_sent(a, "club", "bob")
    await until(lambda: bob.frames("unsubscribed") != [])
    assert "club" not in bob.session.subscriptions


async def test_a_subscribe_cut_by_a_removal_is_answered_not_member(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    await a.create_room("club", "Club", "alice", ["bob"])
    bob = await Opened(b, "bob").open()
    page = b.page

    async def removed_meanwhile(room: str, before: int | None, limit: int) -> object:
        # The history is read while the removal arrives and is confirmed.
        assert await a.remove_member("club", "bob")
        await until(lambda: "club" not in bob.session.subscriptions)
        return await page(room, before, limit)

    b.page = removed_meanwhile  # type: ignore[method-assign,assignment]
    with pytest.raises(NotMember):
        await b.subscribe(bob.session, "club", None, "s1")
    await asyncio.sleep(0)
    assert bob.frames("subscribed") == []
    assert bob.frames("unsubscribed") == [], "it was never subscribed: not_member says it all"


def events_of_a_lag(node: Node) -> list[Event]:
    """The node's `member` events are kept back (its events topic lags): only
    the removal's record in the room's partition of the messages topic remains."""
    kept: list[Event] = []
    produce = node._produce_event

    def lagging(event: Event) -> object:
        if event.kind == "member":
            kept.append(event)
            return None
        return produce(event)

    node._produce_event = lagging  # type: ignore[method-assign,assignment]
    return kept


async def test_a_removal_stops_messages_sent_after_it_however_late_its_event(
    nodes: tuple[Node, Node],
) -> None:
    a, _, bob = await bob_in_the_club(nodes)
    await send(a, "alice", "club", "welcome")
    await until(lambda: bodies(bob) == ["welcome"])
    kept = events_of_a_lag(a)
    assert await a.remove_member("club", "bob")
    assert [e.status for e in kept] == ["removed"]
    await send(a, "alice", "club", "secret")
    await until(lambda: bob.frames("unsubscribed") != [])
    await asyncio.sleep(0.2)
    assert bodies(bob) == ["welcome"]
    assert "club" not in bob.session.subscriptions


async def test_a_removal_read_in_a_batch_splits_it(nodes: tuple[Node, Node]) -> None:
    """What came before the removal in the room's order reaches the member; what
    came after does not, though one batch of the reader holds them all."""
    a, b, bob = await bob_in_the_club(nodes)
    assert await a.store.remove_member("club", "bob")
    partition = partition_for("club", b.partitions)

    def record(offset: int, value: bytes) -> LogRecord:
        return LogRecord(b.messages_topic, partition, offset, b"club", value, 0)

    now = int(time.time() * 1000)
    b._on_messages(
        [
            record(10_000, encode_message("alice", "c1", "before", now)),
            record(10_001, encode_removal("bob", a.node_id)),
            record(10_002, encode_message("alice", "c2", "after", now)),
        ]
    )
    await until(lambda: bob.frames("unsubscribed") != [])
    await asyncio.sleep(0.1)
    assert bodies(bob) == ["before"]
    assert "club" not in bob.session.subscriptions
