"""Presence changes made in one loop turn (a connect storm) go out as one
record per run of one status, and every node still sees each user's last
status, in the order the changes were made."""

from __future__ import annotations

import asyncio

from parley.gateway.node import Node
from parley.log.base import Delivered
from parley.log.records import Event
from tests.unit.inprocess import Opened, ProduceEvent, until


def record_presence(node: Node) -> list[Event]:
    """The presence records the node produces from now on."""
    sent: list[Event] = []
    produce: ProduceEvent = node._produce_event

    def recording(event: Event) -> asyncio.Future[Delivered] | None:
        if event.kind == "presence":
            sent.append(event)
        return produce(event)

    node._produce_event = recording  # type: ignore[method-assign]
    return sent


def online(opened: Opened) -> set[str]:
    status: dict[str, str] = {}
    for frame in opened.frames("presence"):
        status[frame["user"]] = frame["status"]
    return {user for user, s in status.items() if s == "online"}


async def test_users_connecting_together_are_announced_in_one_record(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    users = [f"u{i}" for i in range(10)]
    await a.create_room("club", "Club", "watcher", users)
    watcher = await Opened(b, "watcher").open()
    sent = record_presence(a)
    await asyncio.gather(*(Opened(a, user).open() for user in users))
    await until(lambda: online(watcher) == set(users))
    assert sorted(user for event in sent for user in event.presence_users()) == users
    assert len(sent) == 1


async def test_changes_of_one_turn_keep_their_order(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    await a.create_room("club", "Club", "watcher", ["ann", "bo"])
    watcher = await Opened(b, "watcher").open()
    sent = record_presence(a)
    # ann leaves and comes back, bo arrives and leaves, all in one turn.
    for user, status in [("ann", "online"), ("ann", "offline"), ("bo", "online")]:
        a._presence_changed(user, status)
    a._presence_changed("ann", "online")
    a._presence_changed("bo", "offline")
    await until(lambda: len(sent) == 4)
    assert [(e.status, e.presence_users()) for e in sent] == [
        ("online", ("ann",)),
        ("offline", ("ann",)),
        ("online", ("bo", "ann")),
        ("offline", ("bo",)),
    ]
    await until(lambda: online(watcher) == {"ann"})
    await asyncio.sleep(0.1)
    assert online(watcher) == {"ann"}
