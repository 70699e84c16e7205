"""One session per device across nodes: the newer connection wins, whatever the
producers' speed. One node's device claims are made to land late, as a
producer retrying after a metadata refresh, or starved of a core, makes them
land."""

from __future__ import annotations

import asyncio

from parley.gateway.node import Node
from parley.log.base import Delivered
from parley.log.records import Event
from tests.unit.inprocess import Opened, ProduceEvent, until


def late_claims(node: Node, delay_s: float) -> None:
    """Make this node's device claims reach the log `delay_s` after they are made."""
    produce: ProduceEvent = node._produce_event
    loop = asyncio.get_running_loop()

    def late(event: Event) -> asyncio.Future[Delivered] | None:
        if event.kind != "device":
            return produce(event)
        out: asyncio.Future[Delivered] = loop.create_future()

        def now() -> None:
            real = produce(event)
            assert real is not None
            real.add_done_callback(lambda f: out.set_result(f.result()))

        loop.call_later(delay_s, now)
        return out

    node._produce_event = late  # type: ignore[method-assign]


async def test_a_newer_connection_wins_though_the_older_claim_lands_late(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    late_claims(a, 0.3)
    old = await Opened(a, "alice", "laptop").open()
    assert old.greeted()
    new = await Opened(b, "alice", "laptop").open()
    await until(lambda: old.codes != [])
    assert old.codes == [4409]
    await asyncio.sleep(0.3)  # both claims read on both nodes
    assert new.codes == [], "the connection made after the other's hello must win"
    assert [s.id for s in b.hub.sessions_of("alice")] == [new.session.id]


async def test_a_claim_that_never_reached_the_log_loses_to_any_later_one(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    produce: ProduceEvent = a._produce_event

    def broken(event: Event) -> asyncio.Future[Delivered] | None:
        return None if event.kind == "device" else produce(event)

    a._produce_event = broken  # type: ignore[method-assign]
    old = await Opened(a, "alice", "laptop").open()
    phone = await Opened(a, "alice", "phone").open()
    new = await Opened(b, "alice", "laptop").open()
    await until(lambda: old.codes != [])
    assert old.codes == [4409]
    await asyncio.sleep(0.2)
    assert new.codes == [] and phone.codes == [], "only the same device is replaced"


async def test_the_newer_of_two_sessions_on_one_node_wins_at_once(
    nodes: tuple[Node, Node],
) -> None:
    a, _ = nodes
    late_claims(a, 0.3)
    first = Opened(a, "alice", "laptop")
    opening = asyncio.create_task(first.open())
    await asyncio.sleep(0.05)  # its claim is on its way: not in the hub yet
    second = await Opened(a, "alice", "laptop").open()
    await opening
    assert first.codes == [4409]
    assert not first.greeted(), "replaced before its claim landed: never greeted"
    assert second.greeted()
    await asyncio.sleep(0.2)
    assert second.codes == []
